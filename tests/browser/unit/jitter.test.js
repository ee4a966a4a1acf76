// Unit tests of the adaptive jitter buffer (web-player/jitter.js), driven block by block the way
// the AudioWorklet drives it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JitterBuffer } from '../../../web-player/jitter.js';
import { backoffDelay } from '../../../web-player/socket.js';

const RATE = 48000;
const FRAME = 960; // 20 ms

function chunk(index, value = 0.5, { pts = index * 20000, segment = 0 } = {}) {
  return { pts, sampleRate: RATE, segment, channels: [new Float32Array(FRAME).fill(value)] };
}

function pull(jb, blocks = 1) {
  const outs = [new Float32Array(128), new Float32Array(128)];
  const all = [];
  for (let b = 0; b < blocks; b++) {
    jb.read(outs, 128);
    all.push(...outs[0]);
  }
  return all;
}

test('starts as soon as startMs is buffered, not before', () => {
  const jb = new JitterBuffer({ outputRate: RATE, startMs: 40 });
  jb.push(chunk(0));
  assert.ok(pull(jb).every((v) => v === 0), 'silent while buffering');
  jb.push(chunk(1));
  pull(jb, 2); // fade-in
  assert.equal(jb.stats().state, 'playing');
  assert.ok(Math.abs(pull(jb)[64] - 0.5) < 1e-6);
});

test('plays every sample in order at 1x and tracks the pts being played', () => {
  const jb = new JitterBuffer({ outputRate: RATE, startMs: 20, targetMs: 200 });
  for (let i = 0; i < 5; i++) jb.push({ pts: i * 20000, sampleRate: RATE, channels: [Float32Array.from({ length: FRAME }, (_, k) => i * FRAME + k)] });
  const out = pull(jb, 20); // 2560 samples
  assert.equal(jb.stats().speed, 1);
  for (let k = 300; k < 2560; k++) assert.equal(out[k], k, `sample ${k}`);
  assert.ok(Math.abs(jb.stats().playingPts - (2559 / RATE) * 1e6) < 25);
});

test('an underrun fades out, raises the target and rebuffers', () => {
  const jb = new JitterBuffer({ outputRate: RATE, startMs: 20, targetMs: 100 });
  jb.push(chunk(0));
  pull(jb, 7); // 896 samples: still inside the chunk
  const tail = pull(jb, 2);
  assert.equal(jb.stats().underruns, 1);
  assert.equal(jb.stats().state, 'buffering');
  assert.equal(jb.stats().targetMs, 140);
  assert.ok(tail.at(-1) < 0.05 && tail.at(-1) > 0, 'decays instead of stopping dead');
  for (let i = 1; i < 9; i++) jb.push(chunk(i)); // 160 ms, over the raised target
  pull(jb);
  assert.equal(jb.stats().state, 'playing', 'resumes once the raised target is buffered');
});

test('catches up at 1 % when a little behind and cuts when far behind', () => {
  const jb = new JitterBuffer({ outputRate: RATE, startMs: 20, targetMs: 100, hardDropMs: 250 });
  for (let i = 0; i < 8; i++) jb.push(chunk(i)); // 160 ms: 60 over target
  pull(jb);
  assert.equal(jb.stats().speed, 1.01);
  for (let i = 8; i < 60; i++) jb.push(chunk(i)); // now ~1.2 s buffered
  pull(jb);
  const s = jb.stats();
  assert.ok(s.bufferedMs < 140, `cut to the target, have ${s.bufferedMs} ms`);
  assert.ok(s.droppedMs > 900);
});

test('a pts jump is cross-faded: no sample jumps by more than the fade allows', () => {
  const jb = new JitterBuffer({ outputRate: RATE, startMs: 20, targetMs: 500 });
  jb.push(chunk(0, 0.8));
  jb.push(chunk(1, 0.8));
  jb.push(chunk(50, -0.8)); // skipped 48 frames
  jb.push(chunk(51, -0.8));
  const out = pull(jb, 30);
  let maxStep = 0;
  for (let k = 300; k < out.length; k++) maxStep = Math.max(maxStep, Math.abs(out[k] - out[k - 1]));
  assert.ok(maxStep < 0.01, `largest step ${maxStep}`);
  assert.ok(out.some((v) => v < -0.79), 'the new audio plays at full level after the fade');
});

test('a new segment (source change) counts as a discontinuity even if pts continue', () => {
  const jb = new JitterBuffer({ outputRate: RATE });
  jb.push(chunk(0));
  jb.push(chunk(1, 0.5, { segment: 1 }));
  assert.equal(jb.queue[1].gapBefore, true);
  jb.push(chunk(2, 0.5, { segment: 1 }));
  assert.equal(jb.queue[2].gapBefore, false);
});

test('resamples 48 kHz to a 44.1 kHz device at the right rate', () => {
  const jb = new JitterBuffer({ outputRate: 44100, startMs: 20, targetMs: 1000 });
  for (let i = 0; i < 20; i++) jb.push(chunk(i));
  pull(jb, 100); // 12800 output samples = 290 ms of output
  const consumed = 20 * FRAME - (jb.bufferedMs() / 1000) * RATE;
  assert.ok(Math.abs(consumed - 12800 * (48000 / 44100)) < 2, `consumed ${consumed}`);
});

test('a suspended context cannot make it hoard more than 10 s', () => {
  const jb = new JitterBuffer({ outputRate: RATE });
  for (let i = 0; i < 1000; i++) jb.push(chunk(i));
  assert.ok(jb.bufferedMs() <= 10000);
});

test('reconnect backoff doubles up to the cap, with jitter', () => {
  assert.equal(backoffDelay(0, 500, 5000, () => 0.5), 500);
  assert.equal(backoffDelay(3, 500, 5000, () => 0.5), 4000);
  assert.equal(backoffDelay(9, 500, 5000, () => 0.5), 5000);
  assert.equal(backoffDelay(9, 500, 5000, () => 0), 3750);
  assert.equal(backoffDelay(99, 500, 5000, () => 1), 6250);
});
