// HLS in Chromium through hls.js (MSE): the stream's playlist plays the right tone in
// low-latency mode about a second behind live, and keeps playing across a source switch
// (a discontinuity with a new init segment).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { KEY, REPO, audioState as state, hearsTone as hears, launchBrowser, openAnalysedAudio, sample, startPush, startRelay, waitFor } from './lib/harness.js';

const tone440 = sample('tone-440.flac');
const tone1k = sample('tone-1k.m4a');
const skip = !tone440 || !tone1k ? 'samples are missing' : false;
const HLS_JS = join(REPO, 'tests/browser/node_modules/hls.js/dist/hls.min.js');

/**
 * A page playing `url` with hls.js in low-latency mode through an analyser.
 * @param {{newPage: () => Promise<import('playwright-core').Page>}} browser
 * @param {string} url
 */
function openHls(browser, url) {
  return openAnalysedAudio(browser, url, {
    script: HLS_JS,
    attach: `
      const hls = new globalThis.Hls({ lowLatencyMode: true });
      hls.on(globalThis.Hls.Events.ERROR, (_e, data) => { if (data.fatal) probe.errors.push(data.type + ': ' + data.details); });
      hls.loadSource(url);
      hls.attachMedia(audio);
      probe.hls = hls;`,
  });
}

test('hls.js plays the playlist in low-latency mode within 2 s of live, across a source switch', { skip }, async (t) => {
  const relay = await startRelay(t, { streams: [{ name: 'radio', key: KEY, extra: `playlist = "${tone440}"\n` }] });
  await waitFor(async () => (await fetch(`${relay.base}/radio.m3u8`)).ok, { what: 'the first HLS segment' });
  const browser = await launchBrowser(t);
  const page = await openHls(browser, `${relay.base}/radio.m3u8`);
  await hears(page, 440);
  // Latency: let it settle on the live edge, then sample for a few seconds.
  await page.waitForTimeout(3000);
  const behind = [];
  for (let i = 0; i < 10; i++) {
    behind.push((await state(page)).behindMs);
    await page.waitForTimeout(300);
  }
  const worst = Math.max(...behind);
  t.diagnostic(`behind live: ${behind.map((b) => Math.round(b)).join(', ')} ms`);
  assert.ok(worst <= 2000, `hls.js plays ${worst} ms behind live (target 2 s)`);

  // A live source takes over: a discontinuity, a new init segment, another tone.
  startPush(t, relay, tone1k);
  const live = await hears(page, 1000);
  t.diagnostic(`after the switch: ${live.freq.toFixed(1)} Hz, ${Math.round(live.behindMs)} ms behind`);
  const api = await fetch(`${relay.base}/api/streams`).then((r) => r.json());
  assert.equal(api.streams[0].hls_listeners, 1, 'one HLS session counted');
  assert.deepEqual(browser.errors, []);
});
