// The browser broadcaster end to end: fake microphone/camera → WebCodecs Opus/VP8 → ingest
// WebSocket → relay → the player page in another tab decodes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launchBrowser, measureTone, openBroadcaster, openPlayer, playerStatus, startRelay, tempDir, waitFor, writeToneWav } from './lib/harness.js';

async function toneBrowser(t, freq = 440) {
  const wav = writeToneWav(join(tempDir(t), `tone-${freq}.wav`), { freq });
  return launchBrowser(t, { args: [`--use-file-for-fake-audio-capture=${wav}`] });
}

async function waitLive(page) {
  await waitFor(() => page.evaluate(() => globalThis.onair.broadcaster.state === 'live'), { what: 'the broadcaster to go live' });
}

test('microphone to player: the listener hears the broadcaster\'s 440 Hz tone', async (t) => {
  const relay = await startRelay(t);
  const browser = await toneBrowser(t);
  const bc = await openBroadcaster(browser, relay);
  await waitLive(bc);
  assert.equal(await bc.locator('#badge').textContent(), 'On air');

  const player = await openPlayer(browser, relay);
  await waitFor(async () => (await playerStatus(player))?.playback?.state === 'playing', { what: 'playback' });
  const before = (await playerStatus(player)).counters.audioDecoded;
  await player.waitForTimeout(1500);
  const after = await playerStatus(player);
  assert.ok(after.counters.audioDecoded - before >= 50, `decoded ${after.counters.audioDecoded - before} frames in 1.5 s`);
  const { freq, rms } = await measureTone(player);
  assert.ok(rms > 0.05, `the decoded audio is not silent (rms ${rms.toFixed(3)})`);
  assert.ok(Math.abs(freq - 440) <= 3, `dominant frequency ${freq} Hz`);
  assert.equal(await player.locator('#decoder').textContent(), 'WebCodecs');

  // The broadcaster polls /api/streams and shows the one listener.
  await waitFor(async () => (await bc.locator('#listeners').textContent()) === '1', { what: 'listener count 1 on the broadcaster page' });
  assert.match(await bc.locator('#rate').textContent(), /kbit\/s/);
  assert.deepEqual(browser.errors, []);
});

test('camera to player: VP8 pictures are decoded onto the canvas', async (t) => {
  const relay = await startRelay(t);
  const browser = await toneBrowser(t);
  const bc = await openBroadcaster(browser, relay, { camera: true });
  await waitLive(bc);
  await waitFor(() => bc.evaluate(() => globalThis.onair.broadcaster.counters.videoKeyframes > 0), { what: 'a VP8 keyframe sent' });

  const player = await openPlayer(browser, relay);
  await waitFor(async () => (await playerStatus(player))?.video?.drawn > 20, { timeout: 15_000, what: '20 pictures drawn' });
  const st = await playerStatus(player);
  assert.ok(st.video.decoded >= st.video.drawn);
  assert.ok(await player.locator('#video').isVisible(), 'the canvas is shown');
  const lit = await player.evaluate(() => {
    const c = document.getElementById('video');
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let bright = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 60) bright++;
    return { bright: bright / (px.length / 4), width: c.width, height: c.height };
  });
  assert.ok(lit.width >= 320 && lit.height >= 240, `canvas ${lit.width}x${lit.height}`);
  assert.ok(lit.bright > 0.01, `${(lit.bright * 100).toFixed(1)} % of the pixels are lit`);
  // Audio and video share the stream: sound keeps playing too.
  assert.equal(st.playback.state, 'playing');
  assert.deepEqual(browser.errors, []);
});

test('the capture path of browsers without MediaStreamTrackProcessor, heard through an <audio> element', async (t) => {
  const relay = await startRelay(t);
  const browser = await toneBrowser(t);
  const bc = await openBroadcaster(browser, relay, { camera: true, query: '&capture=fallback' });
  await waitLive(bc);
  const player = await openPlayer(browser, relay, { query: '&output=element' });
  await waitFor(async () => (await playerStatus(player))?.video?.drawn > 10, { timeout: 15_000, what: '10 pictures drawn' });
  await waitFor(async () => (await playerStatus(player)).counters.audioDecoded > 100, { what: '2 s of audio' });
  const { freq, rms } = await measureTone(player);
  assert.ok(rms > 0.05 && Math.abs(freq - 440) <= 3, `${freq} Hz, rms ${rms}`);
  const st = await playerStatus(player);
  assert.equal(st.output, 'element');
  assert.equal(await player.evaluate(() => globalThis.onair.player.element.paused), false, 'the <audio> element plays');
  // The meter taps the <audio> element's input: sampled a few times, it must show the tone.
  let level = 0;
  for (let i = 0; i < 5; i++, await player.waitForTimeout(100)) level = Math.max(level, (await playerStatus(player)).level);
  assert.ok(level > 0.1, `level ${level}`);
  assert.deepEqual(browser.errors, []);
});

test('the broadcaster explains a wrong key, a busy stream and an unknown stream', async (t) => {
  const relay = await startRelay(t);
  const browser = await toneBrowser(t);
  const status = (page) => page.locator('#status').textContent();

  const wrong = await openBroadcaster(browser, relay, { key: 'nope' });
  await waitFor(async () => /wrong key/.test(await status(wrong)), { what: '"wrong key"' });
  assert.equal(await wrong.evaluate(() => globalThis.onair.broadcaster.state), 'stopped');

  const unknown = await openBroadcaster(browser, relay, { stream: 'nosuch' });
  await waitFor(async () => /no stream named/.test(await status(unknown)), { what: '"no stream named"' });

  const first = await openBroadcaster(browser, relay);
  await waitLive(first);
  const second = await openBroadcaster(browser, relay);
  await waitFor(async () => /busy/.test(await status(second)), { what: '"stream busy"' });
  assert.equal(await first.evaluate(() => globalThis.onair.broadcaster.state), 'live', 'the first source stays on air');
  // The failed handshakes are logged by Chromium itself as console errors; nothing else may be.
  const unexpected = browser.errors.filter((e) => !/WebSocket connection to .* failed/.test(e));
  assert.deepEqual(unexpected, []);
});
