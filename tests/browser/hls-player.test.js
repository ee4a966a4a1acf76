// The web player's HLS mode (hls-player.js): `?mode=hls` plays the stream's playlist through
// the vendored hls.js in an <audio> element, with the HLS badge; a browser without WebCodecs
// chooses HLS by itself; when HLS fails the player falls back to the WebSocket player with a
// note. The Media Session shows the source's title in both modes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { KEY, REPO, launchBrowser, playerStatus, sample, startPush, startRelay, waitFor, waitForText } from './lib/harness.js';

const tone = sample('tone-440.flac');
const skip = !tone ? 'samples/tone-440.flac is missing' : false;
const SHOTS = join(REPO, 'target/browser-screenshots');

/** A relay whose stream `radio` is live from `onair push`, with its first HLS segment out. */
async function liveRelay(t) {
  const relay = await startRelay(t);
  const push = startPush(t, relay, tone);
  await waitFor(async () => {
    if (push.proc.exitCode !== null) throw new Error(`onair push exited (${push.proc.exitCode}):\n${push.output()}`);
    return (await fetch(`${relay.base}/radio.m3u8`)).ok;
  }, { timeout: 15_000, what: 'the first HLS segment' });
  return relay;
}

/**
 * Sets the stream's title the way broadcaster tools do, and returns it.
 * @param {{base: string}} relay
 * @param {string} title
 */
async function setTitle(relay, title) {
  const auth = `Basic ${Buffer.from(`source:${KEY}`).toString('base64')}`;
  const url = `${relay.base}/admin/metadata?mount=/radio.ogg&mode=updinfo&song=${encodeURIComponent(title)}`;
  const res = await fetch(url, { headers: { authorization: auth } });
  assert.equal(res.status, 200, `setting the title: ${await res.text()}`);
  return title;
}

/** The title the page gave the Media Session. */
function sessionTitle(page) {
  return page.evaluate(() => navigator.mediaSession.metadata?.title ?? null);
}

/** Waits until the HLS element has played `seconds` more. */
async function hlsPlays(page, seconds = 2) {
  const first = await waitFor(async () => {
    const st = await playerStatus(page);
    return st?.hls?.playing ? st : null;
  }, { timeout: 20_000, what: 'the HLS element to play' });
  await waitFor(async () => (await playerStatus(page)).hls.currentTime >= first.hls.currentTime + seconds, {
    timeout: 15_000, what: `${seconds} s of HLS playback`,
  });
  return playerStatus(page);
}

test('?mode=hls plays the stream through the vendored hls.js, with the HLS badge and the title', { skip }, async (t) => {
  const relay = await liveRelay(t);
  const browser = await launchBrowser(t);
  const vendored = [];
  browser.context.on('request', (req) => { if (req.url().includes('/vendor/hls.')) vendored.push(req.url()); });

  // The WebSocket player (the default here) does not load hls.js.
  const plain = await browser.newPage();
  await plain.goto(`${relay.base}/?stream=radio`);
  await plain.locator('#play').click();
  await waitFor(async () => (await playerStatus(plain))?.playback?.state === 'playing', { timeout: 15_000, what: 'the WebSocket player' });
  assert.equal((await playerStatus(plain)).mode, 'websocket');
  assert.ok(await plain.locator('#mode').isHidden(), 'no HLS badge in WebSocket mode');
  assert.deepEqual(vendored, [], 'hls.js is loaded only in HLS mode');
  await plain.close();

  const page = await browser.newPage();
  await page.goto(`${relay.base}/?stream=radio&mode=hls`);
  await page.locator('#play').click();
  const st = await hlsPlays(page, 2);
  assert.equal(st.mode, 'hls');
  assert.equal(st.hls.engine, 'hls.js', 'Chromium on Linux has no native HLS');
  assert.match(vendored.join(' '), /\/vendor\/hls\.light\.min\.mjs$/);
  assert.ok(await page.locator('#mode').isVisible(), 'the HLS badge shows');
  assert.equal(await page.locator('#mode').textContent(), 'HLS');
  assert.equal(await page.locator('#decoder').textContent(), 'HLS (hls.js)');
  await waitForText(page, '#conn', /^playing$/);
  await waitForText(page, '#latency', /^\d+ ms$/);

  // Titles come from the stream list the page polls; the Media Session follows.
  const title = await setTitle(relay, 'Tone Generators - Four Forty');
  await waitForText(page, '#now-playing', /Four Forty/, { timeout: 15_000 });
  await waitFor(async () => (await sessionTitle(page)) === title, { timeout: 10_000, what: `Media Session title "${title}"` });
  assert.equal(await page.evaluate(() => navigator.mediaSession.metadata?.artist), 'radio', 'the artist is the stream');
  const api = await fetch(`${relay.base}/api/streams`).then((r) => r.json());
  // The page's session, and the test's own probe of the playlist for a few seconds more.
  assert.ok(api.streams[0].hls_listeners >= 1, 'the relay counts the HLS session');
  await waitFor(async () => Number(await page.locator('#listeners').textContent()) >= 1, { what: 'HLS sessions among the listeners' });

  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, 'hls-mode.png') });
  t.diagnostic(`screenshot: ${join(SHOTS, 'hls-mode.png')}; ${Math.round(st.behindLiveMs ?? -1)} ms behind live`);

  // Stop really stops the element.
  await page.locator('#play').click();
  await waitForText(page, '#conn', /^stopped$/);
  assert.deepEqual(browser.errors, []);
});

test('a browser without WebCodecs (no AudioDecoder) chooses HLS by itself', { skip }, async (t) => {
  const relay = await liveRelay(t);
  const browser = await launchBrowser(t);
  await browser.context.addInitScript(() => { delete globalThis.AudioDecoder; });
  const page = await browser.newPage();
  await page.goto(`${relay.base}/?stream=radio`);
  assert.equal(await page.evaluate(() => typeof globalThis.AudioDecoder), 'undefined');
  await page.locator('#play').click();
  const st = await hlsPlays(page, 2);
  assert.equal(st.mode, 'hls');
  assert.ok(await page.locator('#mode').isVisible(), 'the HLS badge shows');
  assert.deepEqual(browser.errors, []);
});

test('when HLS fails (the playlist is 404) the player falls back to WebSocket with a note', { skip }, async (t) => {
  const relay = await liveRelay(t);
  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  let refused = 0;
  await page.route('**/radio.m3u8*', (route) => {
    refused++;
    return route.fulfill({ status: 404, contentType: 'text/plain', body: 'no such playlist\n' });
  });
  await page.goto(`${relay.base}/?stream=radio&mode=hls`);
  await page.locator('#play').click();
  await waitFor(async () => {
    const st = await playerStatus(page);
    return st?.mode === 'websocket' && st.playback?.state === 'playing';
  }, { timeout: 20_000, what: 'the WebSocket player to take over and play' });
  assert.ok(refused > 0, 'hls.js asked for the playlist');
  assert.ok(await page.locator('#mode-note').isVisible(), 'the fallback note shows');
  assert.match(await page.locator('#mode-note').textContent(), /^HLS did not work here: .*404.*\. Playing over WebSocket instead\.$/);
  assert.ok(await page.locator('#mode').isHidden(), 'no HLS badge');
  await waitForText(page, '#decoder', /^WebCodecs$/);
  const decoded = (await playerStatus(page)).counters.audioDecoded;
  await waitFor(async () => (await playerStatus(page)).counters.audioDecoded >= decoded + 50, { what: '1 s more of audio' });

  // The Media Session shows the title the source sets, once it is heard.
  const title = await setTitle(relay, 'Fallback Band - Still Playing');
  await waitFor(async () => (await sessionTitle(page)) === title, { timeout: 10_000, what: `Media Session title "${title}"` });
  assert.equal(await page.evaluate(() => navigator.mediaSession.metadata?.artist), 'radio');
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, 'hls-fallback.png') });
  // Only the refused playlist is an error in the console.
  assert.deepEqual(browser.errors.filter((e) => !/404/.test(e)), []);
});
