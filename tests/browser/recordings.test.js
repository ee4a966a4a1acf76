// Listen again in the web player: a show recorded by the relay (`record = true`) is listed
// under the stream with its title, date and duration; the keyboard plays it in the page's
// <audio> element (Chromium fetches it with a byte range, answered 206), which hears the right
// tone, knows the file's duration, and seeks when a title of the show is chosen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ONAIR_BIN, REPO, KEY, launchBrowser, sample, spawnTracked, startRelay, tempDir, waitFor } from './lib/harness.js';

const tone440 = sample('tone-440.flac');
const tone1k = sample('tone-1k.m4a');
const skip = !tone440 || !tone1k ? 'samples are missing' : false;

/** The <audio> element's time and state, and the dominant frequency it plays (100 Hz-4 kHz). */
function state(page) {
  return page.evaluate(() => {
    const { audio, ctx, analyser } = globalThis.probe;
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    const hz = ctx.sampleRate / analyser.fftSize;
    let best = 0;
    for (let i = Math.ceil(100 / hz); i < 4000 / hz; i++) if (bins[i] > bins[best]) best = i;
    return { time: audio.currentTime, duration: audio.duration, paused: audio.paused, error: audio.error?.message ?? null, freq: best * hz, level: bins[best] };
  });
}

/** Waits until the element has played on for `seconds` and hears `freq` (±15 Hz). */
async function hears(page, freq, { seconds = 0.6, timeout = 10_000 } = {}) {
  const start = (await state(page)).time;
  let last;
  await waitFor(async () => {
    last = await state(page);
    if (last.error) throw new Error(`<audio> error: ${last.error}`);
    return last.time - start >= seconds && Math.abs(last.freq - freq) <= 15 && last.level > -60;
  }, { timeout, what: `${freq} Hz for ${seconds} s of playback` }).catch((err) => {
    throw new Error(`${err.message}; last ${JSON.stringify(last)}`);
  });
  return last;
}

test('a recorded show is listed and played again, seeking to its titles', { skip }, async (t) => {
  const dir = tempDir(t, 'onair-recordings-');
  const relay = await startRelay(t, {
    extra: `recordings_dir = "${dir}"\nrecordings_fsync_seconds = 1\n`,
    streams: [{ name: 'radio', key: KEY, extra: 'record = true\n' }],
  });
  // A show of two titles: 4 s at 440 Hz, then 2 s at 1 kHz; the source leaves at the end.
  const push = spawnTracked(t, ONAIR_BIN, ['push', '--to', `${relay.ws}/ingest/radio`, '--key', KEY, tone440, tone1k], { cwd: REPO });
  assert.equal(await push.exited, 0, push.output());
  const [show] = await waitFor(async () => {
    const res = await fetch(`${relay.base}/api/recordings/radio`).then((r) => r.json());
    return res.recordings.length && res.recordings[0].state === 'complete' ? res.recordings : null;
  }, { what: 'the show to be recorded' });
  t.diagnostic(`recorded ${show.duration_s} s, titles ${JSON.stringify(show.titles.map((c) => [c.offset_s, c.title]))}`);
  assert.equal(show.titles.length, 2);

  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  /** @type {Array<{range: string|undefined, status: number}>} */
  const fetched = [];
  page.on('response', (res) => {
    if (res.url().includes('/recordings/radio/')) fetched.push({ range: res.request().headers().range, status: res.status() });
  });
  await page.goto(`${relay.base}/?stream=radio`);
  await page.evaluate(() => {
    const audio = /** @type {HTMLAudioElement} */ (document.getElementById('replay-audio'));
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    ctx.createMediaElementSource(audio).connect(analyser);
    analyser.connect(ctx.destination);
    globalThis.probe = { audio, ctx, analyser };
  });
  const item = page.getByRole('button', { name: /^Play recording: onair samples - Tone 440 Hz, .+, 0:06$/ });
  await item.waitFor({ timeout: 10_000 });
  // The keyboard plays it: the button takes the focus and Enter presses it.
  await item.focus();
  await page.keyboard.press('Enter');
  assert.equal(await item.getAttribute('aria-pressed'), 'true');
  assert.match(await page.locator('#replay-title').textContent(), /Tone 440 Hz/);
  const first = await hears(page, 440);
  t.diagnostic(`plays ${first.freq.toFixed(1)} Hz at ${first.time.toFixed(2)} s of ${first.duration} s`);
  assert.ok(Math.abs(first.duration - show.duration_s) < 0.1, `duration ${first.duration} vs ${show.duration_s}`);

  // The second title seeks into the file: the tone changes.
  const chapter = page.getByRole('button', { name: /^Go to onair samples - Tone 1 kHz, at 0:0[34]$/ });
  await chapter.focus();
  await page.keyboard.press('Enter');
  const second = await hears(page, 1000, { seconds: 0.3 });
  assert.ok(second.time >= show.titles[1].offset_s, `at ${second.time} s`);
  await waitFor(() => page.locator('.chapter[aria-current]').textContent().then((text) => /1 kHz/.test(text ?? '')), { what: 'the title heard to be marked' });
  // And back to the start.
  await page.getByRole('button', { name: /^Go to onair samples - Tone 440 Hz/ }).click();
  const back = await hears(page, 440);
  assert.ok(back.time < show.titles[1].offset_s, `at ${back.time} s`);
  assert.equal(back.paused, false);
  t.diagnostic(`file requests: ${JSON.stringify(fetched)}`);
  assert.ok(fetched.some((f) => f.range && f.status === 206), 'Chromium asked for byte ranges and got them');
  if (process.env.SCREENSHOTS) await page.screenshot({ path: process.env.SCREENSHOTS, fullPage: true });
  assert.deepEqual(browser.errors, []);
});

test('a stream that is not recorded says so, and asks nothing of the relay', async (t) => {
  const relay = await startRelay(t);
  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  const asked = [];
  page.on('request', (req) => { if (req.url().includes('/api/recordings/')) asked.push(req.url()); });
  await page.goto(`${relay.base}/?stream=radio`);
  await waitFor(() => page.locator('#recordings-note').textContent().then((text) => /not recorded/.test(text ?? '')), { what: 'the note' });
  assert.deepEqual(asked, []);
  assert.deepEqual(browser.errors, []);
});
