// Chromium's own <audio> element on the relay's HTTP streams (/radio.ogg, /radio.mp3), as a
// page that does not use the web player would: it joins mid-stream, plays the right tone, and
// keeps playing across source switches (each a new chained Ogg stream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KEY, launchBrowser, sample, spawnTracked, startPush, startRelay, waitFor } from './lib/harness.js';

const tone440 = sample('tone-440.flac');
const tone1k = sample('tone-1k.m4a');
const skip = !tone440 || !tone1k ? 'samples are missing' : false;

/**
 * Opens a page with an <audio> element on `url` routed through an analyser; returns the page.
 * @param {{newPage: () => Promise<import('playwright-core').Page>}} browser
 * @param {string} url
 */
async function openAudio(browser, url) {
  const page = await browser.newPage();
  await page.setContent('<audio id="a" crossorigin="anonymous"></audio>');
  await page.evaluate((src) => {
    const audio = /** @type {HTMLAudioElement} */ (document.getElementById('a'));
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 16384;
    ctx.createMediaElementSource(audio).connect(analyser);
    analyser.connect(ctx.destination);
    /** @type {any} */ (globalThis).probe = { audio, ctx, analyser, errors: [] };
    audio.addEventListener('error', () => globalThis.probe.errors.push(audio.error?.message ?? 'error'));
    audio.src = src;
    return audio.play();
  }, url);
  return page;
}

/** currentTime, errors and the dominant frequency (FFT peak between 100 Hz and 4 kHz). */
function state(page) {
  return page.evaluate(() => {
    const { audio, ctx, analyser, errors } = globalThis.probe;
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    const hz = ctx.sampleRate / analyser.fftSize;
    let best = 0;
    for (let i = Math.ceil(100 / hz); i < 4000 / hz; i++) if (bins[i] > bins[best]) best = i;
    return { time: audio.currentTime, paused: audio.paused, errors, freq: best * hz, level: bins[best] };
  });
}

/** Waits until the element has played `seconds` more and hears `freq` (±15 Hz). */
async function hears(page, freq, { seconds = 1.5, timeout = 20_000 } = {}) {
  const start = (await state(page)).time;
  let last;
  await waitFor(async () => {
    last = await state(page);
    if (last.errors.length) throw new Error(`<audio> error: ${last.errors.join(', ')}`);
    return last.time - start >= seconds && Math.abs(last.freq - freq) <= 15 && last.level > -60;
  }, { timeout, what: `${freq} Hz for ${seconds} s of playback` }).catch((err) => {
    throw new Error(`${err.message}; last ${JSON.stringify(last)}`);
  });
  return last;
}

test('<audio> plays /radio.ogg from mid-stream and across source switches (chained Ogg)', { skip }, async (t) => {
  const relay = await startRelay(t, { streams: [{ name: 'radio', key: KEY, extra: `playlist = "${tone440}"\n` }] });
  await waitFor(async () => {
    const res = await fetch(`${relay.base}/api/streams`).then((r) => r.json());
    return res.streams[0].source === 'autodj';
  }, { what: 'the auto-DJ on air' });
  // Join a few seconds into the stream.
  await new Promise((r) => setTimeout(r, 2000));
  const browser = await launchBrowser(t);
  const page = await openAudio(browser, `${relay.base}/radio.ogg`);
  const joined = await hears(page, 440);
  t.diagnostic(`auto-DJ: ${joined.freq.toFixed(1)} Hz at ${joined.time.toFixed(2)} s`);

  // A live source takes over: a new link of the chain, with its own header.
  const push = startPush(t, relay, tone1k);
  const live = await hears(page, 1000);
  t.diagnostic(`live: ${live.freq.toFixed(1)} Hz at ${live.time.toFixed(2)} s`);
  // It leaves: the auto-DJ comes back, another link.
  push.proc.kill('SIGINT');
  await push.exited;
  const back = await hears(page, 440);
  t.diagnostic(`auto-DJ again: ${back.freq.toFixed(1)} Hz at ${back.time.toFixed(2)} s`);
  assert.equal(back.paused, false);
  assert.deepEqual(browser.errors, []);
});

test('<audio> plays /radio.mp3 pushed by ffmpeg over the Icecast protocol', { skip }, async (t) => {
  const relay = await startRelay(t);
  const ffmpeg = spawnTracked(t, 'ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'sine=frequency=1000:sample_rate=44100',
    '-c:a', 'libmp3lame', '-b:a', '128k', '-content_type', 'audio/mpeg', '-f', 'mp3',
    `icecast://source:${KEY}@127.0.0.1:${relay.port}/radio.mp3`,
  ]);
  await waitFor(async () => {
    if (ffmpeg.proc.exitCode !== null) throw new Error(`ffmpeg exited: ${ffmpeg.output()}`);
    const res = await fetch(`${relay.base}/api/streams`).then((r) => r.json());
    return res.streams[0].live;
  }, { timeout: 15_000, what: 'ffmpeg to go live' });
  await new Promise((r) => setTimeout(r, 1000));
  const browser = await launchBrowser(t);
  const page = await openAudio(browser, `${relay.base}/radio.mp3`);
  const heard = await hears(page, 1000, { seconds: 2 });
  t.diagnostic(`mp3: ${heard.freq.toFixed(1)} Hz at ${heard.time.toFixed(2)} s`);
  assert.deepEqual(browser.errors, []);
});
