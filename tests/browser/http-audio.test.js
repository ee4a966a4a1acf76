// Chromium's own <audio> element on the relay's HTTP streams (/radio.ogg, /radio.mp3), as a
// page that does not use the web player would: it joins mid-stream, plays the right tone, and
// keeps playing across source switches (each a new chained Ogg stream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KEY, hearsTone as hears, launchBrowser, openAnalysedAudio as openAudio, sample, spawnTracked, startPush, startRelay, waitFor } from './lib/harness.js';

const tone440 = sample('tone-440.flac');
const tone1k = sample('tone-1k.m4a');
const skip = !tone440 || !tone1k ? 'samples are missing' : false;

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
