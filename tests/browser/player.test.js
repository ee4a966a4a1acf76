// The web player end to end with `onair push` as the source: a known 440 Hz tone, played
// through WebCodecs and through the WebAssembly fallback decoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorsBesidesRelayDown, launchBrowser, measureTone, playerStatus, sample, startPush, startRelay, waitFor } from './lib/harness.js';

const tone = sample('tone-440.flac');
const skip = !tone ? 'samples/tone-440.flac is missing' : false;

async function playsTone(t, { query = '', decoder }) {
  const relay = await startRelay(t);
  const push = startPush(t, relay, tone);
  await waitFor(async () => {
    if (push.proc.exitCode !== null) throw new Error(`onair push exited (${push.proc.exitCode}):\n${push.output()}`);
    const res = await fetch(`${relay.base}/api/streams`).then((r) => r.json());
    return res.streams.find((s) => s.name === 'radio')?.live;
  }, { timeout: 15_000, what: 'onair push to go live' });

  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  await page.goto(`${relay.base}/?stream=radio${query}`);
  await page.waitForLoadState('networkidle');
  // "Presses play and hears the station within a second": time from the click to sound.
  const startMs = await page.evaluate(async () => {
    const t0 = performance.now();
    document.getElementById('play').click();
    while (globalThis.onair?.player?.status().playback?.state !== 'playing') await new Promise((r) => setTimeout(r, 10));
    return performance.now() - t0;
  });
  t.diagnostic(`sound ${Math.round(startMs)} ms after pressing play`);
  assert.ok(startMs < 1000, `playback took ${startMs} ms to start`);

  const first = await playerStatus(page);
  await page.waitForTimeout(2000);
  const st = await playerStatus(page);
  const frames = st.counters.audioDecoded - first.counters.audioDecoded;
  assert.ok(frames >= 80, `decoded ${frames} frames in 2 s of real-time push (expect ~100)`);
  const { freq, rms } = await measureTone(page);
  t.diagnostic(`dominant ${freq} Hz, rms ${rms.toFixed(3)}, behind live ${Math.round(st.behindLiveMs)} ms, buffer ${Math.round(st.playback.bufferedMs)} ms`);
  assert.ok(Math.abs(freq - 440) <= 2, `dominant frequency ${freq} Hz`);
  assert.ok(rms > 0.2 && rms < 0.5, `rms ${rms} (the sample's is 0.354)`);
  assert.equal(await page.locator('#decoder').textContent(), decoder);
  assert.ok(st.playback.underruns <= 1, `${st.playback.underruns} underruns`);
  await waitFor(async () => (await page.locator('#conn').textContent()) === 'playing', { what: 'state "playing"' });
  assert.ok(st.behindLiveMs < 1000, `behind live ${st.behindLiveMs} ms`);
  assert.match(await page.locator('#latency').textContent(), /^\d+ ms$/);
  assert.ok(st.level > 0.1, `output level ${st.level}`);

  // Now playing: onair push sends the file's tags; the page shows what the relay has.
  const api = await fetch(`${relay.base}/api/streams`).then((r) => r.json());
  const meta = api.streams[0].metadata;
  if (meta?.title) {
    await waitFor(async () => (await page.locator('#now-playing').textContent()) === meta.title, { what: `title "${meta.title}"` });
  } else {
    t.diagnostic('onair push sent no metadata; now playing not checked');
  }
  await waitFor(async () => (await page.locator('#listeners').textContent()) === '1', { what: 'listener count 1' });
  assert.deepEqual(browser.errors, []);
}

test('player plays onair push\'s 440 Hz tone through WebCodecs', { skip }, (t) => playsTone(t, { decoder: 'WebCodecs' }));

test('player plays the same tone through the WebAssembly fallback (?decoder=wasm)', { skip }, (t) => playsTone(t, { query: '&decoder=wasm', decoder: 'WASM' }));

test('player plays again after the relay restarts under onair push', { skip }, async (t) => {
  const relay = await startRelay(t);
  startPush(t, relay, tone);
  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  await page.goto(`${relay.base}/?stream=radio`);
  await page.locator('#play').click();
  await waitFor(async () => (await playerStatus(page))?.counters.audioDecoded > 50, { timeout: 15_000, what: 'playback' });

  await relay.kill();
  await waitFor(async () => (await page.locator('#conn').textContent()) === 'reconnecting', { what: 'the player to notice' });
  await startRelay(t, { port: relay.port });
  // onair push and the player both come back by themselves.
  const decoded = (await playerStatus(page)).counters.audioDecoded;
  await waitFor(async () => {
    const st = await playerStatus(page);
    return st.counters.audioDecoded > decoded + 100 && st.playback.state === 'playing';
  }, { timeout: 20_000, what: '2 s of audio after the restart' });
  const { freq } = await measureTone(page);
  assert.ok(Math.abs(freq - 440) <= 2, `${freq} Hz after the restart`);
  assert.deepEqual(errorsBesidesRelayDown(browser.errors), []);
});
