// Shared pieces of the browser tests: a real relay process per test on 127.0.0.1:0, `onair push`,
// headless Debian Chromium through playwright-core, a known test tone, and polling helpers.
// Every process and browser a test starts is registered with `t.after` and also killed when
// the test process exits, so a failing or crashing test leaves nothing running.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const ONAIR_BIN = process.env.ONAIR_BIN ?? join(REPO, 'target/debug/onair');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const KEY = 'browser-test-key-0123';

const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Fresh temp dir, removed after the test. */
export function tempDir(t, prefix = 'onair-browser-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => removeDir(dir));
  return dir;
}

function removeDir(dir) {
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
  } catch (err) {
    console.error(`could not remove ${dir}: ${err.message}`);
  }
}

/**
 * Spawns a process that is killed after the test (and on exit); keeps its output.
 * @returns {{proc: import('node:child_process').ChildProcess, output: () => string, exited: Promise<number|null>}}
 */
export function spawnTracked(t, cmd, args, opts = {}) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG ?? 'info' }, ...opts });
  children.add(proc);
  let out = '';
  const keep = (chunk) => {
    out += chunk;
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise((res) => proc.on('exit', (code) => {
    children.delete(proc);
    res(code);
  }));
  t.after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
  });
  return { proc, output: () => out, exited };
}

/**
 * Starts `onair serve` with a config of the given streams; resolves once it logs the address.
 * @param {import('node:test').TestContext} t
 * @param {{port?: number, streams?: Array<{name: string, key: string}>, extra?: string}} [opts]
 */
export async function startRelay(t, { port = 0, streams = [{ name: 'radio', key: KEY }], extra = '' } = {}) {
  const dir = tempDir(t, 'onair-relay-');
  const config = join(dir, 'onair.toml');
  const body = streams.map((s) => `[[streams]]\nname = "${s.name}"\nkey = "${s.key}"\n${s.extra ?? ''}`).join('\n');
  writeFileSync(config, `listen = "127.0.0.1:${port}"\n${extra}\n${body}`);
  const child = spawnTracked(t, ONAIR_BIN, ['serve', '--config', config, '--listen', `127.0.0.1:${port}`], { cwd: REPO });
  const bound = await waitFor(() => {
    // eslint-disable-next-line no-control-regex
    const log = child.output().replace(/\x1b\[[0-9;]*m/g, '');
    if (child.proc.exitCode !== null) throw new Error(`relay exited (${child.proc.exitCode}):\n${log}`);
    const line = log.split('\n').find((l) => /listening/.test(l) && /127\.0\.0\.1:(\d+)/.test(l));
    return line ? Number(/127\.0\.0\.1:(\d+)/.exec(line)[1]) : null;
  }, { timeout: 15_000, what: 'the relay to log its address' });
  const base = `http://127.0.0.1:${bound}`;
  return {
    ...child,
    port: bound,
    base,
    ws: `ws://127.0.0.1:${bound}`,
    /** Kills the relay (SIGKILL: a crash, not a drain) and waits for it to be gone. */
    async kill(signal = 'SIGKILL') {
      child.proc.kill(signal);
      await child.exited;
    },
  };
}

/** Path of a sample in the repo's samples/, or null when the samples are not there. */
export function sample(name) {
  const path = join(REPO, 'samples', name);
  return existsSync(path) ? path : null;
}

/** Runs `onair push` to a relay's stream (real-time pacing). */
export function startPush(t, relay, file, { stream = 'radio', key = KEY, extra = [] } = {}) {
  return spawnTracked(t, ONAIR_BIN, ['push', '--to', `${relay.ws}/ingest/${stream}`, '--key', key, file, '--loop', ...extra], { cwd: REPO });
}

/**
 * Headless Debian Chromium with the flags known to work here (shared/tooling.md), in a fresh
 * profile. Console errors and page errors of every page are collected in `errors`.
 * @param {{args?: string[], viewport?: {width: number, height: number}}} [opts]
 */
export async function launchBrowser(t, { args = [], viewport = { width: 1280, height: 860 } } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'onair-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      ...args,
    ],
  });
  t.after(async () => {
    await context.close().catch(() => {});
    removeDir(profile); // only once Chromium is gone: it writes to its profile until then
  });
  const errors = [];
  const watch = (page) => {
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(`${page.url()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => errors.push(`${page.url()}: ${err.message}`));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  return { context, errors, newPage: () => context.newPage() };
}

/**
 * Writes a 16-bit PCM WAV of a sine tone (what `sox -n -r 48000 -c 1 -b 16 f.wav synth 5 sine 440
 * vol 0.5` makes), for Chromium's --use-file-for-fake-audio-capture.
 */
export function writeToneWav(path, { freq = 440, seconds = 5, rate = 48000, amplitude = 0.5 } = {}) {
  const n = seconds * rate;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write('WAVEfmt ', 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36);
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(32767 * amplitude * Math.sin((2 * Math.PI * freq * i) / rate)), 44 + i * 2);
  writeFileSync(path, buf);
  return path;
}

/**
 * Polls `fn` until it returns something truthy (or throws), or fails after `timeout` ms.
 * @template T
 * @param {() => T|Promise<T>} fn
 * @returns {Promise<T>}
 */
export async function waitFor(fn, { timeout = 10_000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/**
 * Waits until the element's text matches `pattern`. The player draws its deck on the next
 * animation frame after a change, so text read straight after a status change can be stale.
 * @param {import('playwright-core').Page} page
 * @param {string} selector
 * @param {RegExp} pattern
 */
export function waitForText(page, selector, pattern, { timeout = 10_000 } = {}) {
  let text = '';
  return waitFor(async () => pattern.test((text = (await page.locator(selector).textContent()) ?? '')), { timeout, what: `${selector} to match ${pattern}` })
    .catch((err) => { throw new Error(`${err.message}; it says ${JSON.stringify(text)}`); });
}

/**
 * The console errors that a relay being killed does not explain. While it is down Chromium
 * logs each refused WebSocket and API poll, and a poll in flight at the kill is answered
 * with nothing (ERR_EMPTY_RESPONSE) or a reset.
 * @param {string[]} errors
 */
export function errorsBesidesRelayDown(errors) {
  return errors.filter((e) => !/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET/.test(e));
}

/** The player's status snapshot (window.onair.player.status()). */
export function playerStatus(page) {
  return page.evaluate(() => globalThis.onair?.player?.status() ?? null);
}

/**
 * Dominant frequency and RMS of the player's most recent decoded PCM, found by a Goertzel scan
 * (coarse 5 Hz steps over 50-4000 Hz, then 0.25 Hz steps around the peak), run in the page.
 * @returns {Promise<{freq: number, rms: number}>}
 */
export function measureTone(page) {
  return page.evaluate(() => {
    const { samples, sampleRate } = globalThis.onair.player.recentPcm();
    const x = samples.subarray(samples.length - 8192);
    let rms = 0;
    for (const v of x) rms += v * v;
    rms = Math.sqrt(rms / x.length);
    const power = (f) => {
      const w = (2 * Math.PI * f) / sampleRate;
      const c = 2 * Math.cos(w);
      let s1 = 0;
      let s2 = 0;
      for (let i = 0; i < x.length; i++) {
        const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (x.length - 1));
        const s0 = x[i] * hann + c * s1 - s2;
        s2 = s1;
        s1 = s0;
      }
      return s1 * s1 + s2 * s2 - c * s1 * s2;
    };
    let best = 0;
    let bestP = -1;
    for (let f = 50; f <= 4000; f += 5) {
      const p = power(f);
      if (p > bestP) [best, bestP] = [f, p];
    }
    const coarse = best;
    for (let f = coarse - 5; f <= coarse + 5; f += 0.25) {
      const p = power(f);
      if (p > bestP) [best, bestP] = [f, p];
    }
    return { freq: best, rms };
  });
}

/**
 * A page whose `<audio id="a">` goes through an analyser (CORS-enabled, so the samples are
 * readable); `attach(audio)` runs in the page to give the element its source (a plain `src`,
 * hls.js). The page keeps `globalThis.probe` for `audioState`.
 * @param {{newPage: () => Promise<import('playwright-core').Page>}} browser
 * @param {string} url
 * @param {{script?: string, attach?: string}} [opts] a script to load first, and the body of
 *   `attach(audio, url, probe)` (default: `audio.src = url`)
 */
export async function openAnalysedAudio(browser, url, { script, attach = 'audio.src = url;' } = {}) {
  const page = await browser.newPage();
  await page.setContent('<audio id="a" crossorigin="anonymous"></audio>');
  if (script) await page.addScriptTag({ path: script });
  await page.evaluate(([src, body]) => {
    const audio = /** @type {HTMLAudioElement} */ (document.getElementById('a'));
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 16384;
    ctx.createMediaElementSource(audio).connect(analyser);
    analyser.connect(ctx.destination);
    /** @type {any} */
    const probe = { audio, ctx, analyser, errors: [] };
    /** @type {any} */ (globalThis).probe = probe;
    audio.addEventListener('error', () => probe.errors.push(audio.error?.message ?? 'error'));
    // eslint-disable-next-line no-new-func
    new Function('audio', 'url', 'probe', body)(audio, src, probe);
    return audio.play().catch(() => {});
  }, [url, attach]);
  return page;
}

/**
 * The analysed element's playback time, errors, dominant frequency (FFT peak between 100 Hz
 * and 4 kHz), its level, and how far behind the wall clock it plays when `probe.hls` knows.
 * @param {import('playwright-core').Page} page
 */
export function audioState(page) {
  return page.evaluate(() => {
    const { audio, ctx, analyser, errors, hls } = globalThis.probe;
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    const hz = ctx.sampleRate / analyser.fftSize;
    let best = 0;
    for (let i = Math.ceil(100 / hz); i < 4000 / hz; i++) if (bins[i] > bins[best]) best = i;
    const playing = hls?.playingDate;
    return {
      time: audio.currentTime,
      paused: audio.paused,
      errors,
      freq: best * hz,
      level: bins[best],
      behindMs: playing ? Date.now() - playing.getTime() : null,
    };
  });
}

/**
 * Waits until the analysed element has played `seconds` more and hears `freq` (±15 Hz).
 * @param {import('playwright-core').Page} page
 * @param {number} freq
 */
export async function hearsTone(page, freq, { seconds = 1.5, timeout = 25_000 } = {}) {
  const start = (await audioState(page)).time;
  /** @type {any} */
  let last;
  await waitFor(async () => {
    last = await audioState(page);
    if (last.errors.length) throw new Error(`playback error: ${last.errors.join(', ')}`);
    return last.time - start >= seconds && Math.abs(last.freq - freq) <= 15 && last.level > -60;
  }, { timeout, what: `${freq} Hz for ${seconds} s of playback` }).catch((err) => {
    throw new Error(`${err.message}; last ${JSON.stringify(last)}`);
  });
  return last;
}

/** Opens the player page on a stream and presses play; returns the page. */
export async function openPlayer(browser, relay, { stream = 'radio', query = '' } = {}) {
  const page = await browser.newPage();
  await page.goto(`${relay.base}/?stream=${stream}${query}`);
  await page.getByRole('button', { name: 'Play', exact: true }).click();
  return page;
}

/** Opens the broadcaster page, fills in the form and presses "Go live". */
export async function openBroadcaster(browser, relay, { stream = 'radio', key = KEY, camera = false, query = '' } = {}) {
  const page = await browser.newPage();
  await page.goto(`${relay.base}/broadcast?stream=${stream}${query}`);
  await page.getByLabel('Key').fill(key);
  if (camera) await page.getByRole('checkbox', { name: 'Camera' }).check();
  await page.getByRole('button', { name: 'Go live' }).click();
  return page;
}
