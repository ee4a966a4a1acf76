// Unit tests of the pure wire-format code shared by the player and the broadcaster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildOpusHead, decodeFrame, displayTitle, encodeFrame, parseEvent, parseOpusHead } from '../../../web-player/protocol.js';

test('frame header matches the documented byte layout', () => {
  const msg = encodeFrame({ keyframe: true, header: true, track: 7, pts: 0x0102030405060708 - 8 }, new Uint8Array([9, 9]));
  // Same bytes as the Rust test `frame_header_round_trips` (pts chosen to be exact in a double).
  assert.deepEqual([...msg.subarray(0, 2)], [3, 7]);
  const frame = decodeFrame(msg.buffer);
  assert.equal(frame.keyframe, true);
  assert.equal(frame.header, true);
  assert.equal(frame.track, 7);
  assert.equal(frame.pts, 0x0102030405060708 - 8);
  assert.deepEqual([...frame.payload], [9, 9]);
});

test('frame header is big-endian', () => {
  const msg = encodeFrame({ track: 1, pts: 256 }, new Uint8Array());
  assert.deepEqual([...msg], [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]);
});

test('truncated frames and reserved flags are refused', () => {
  assert.throws(() => decodeFrame(new Uint8Array([1, 0, 0])), /truncated/);
  assert.throws(() => decodeFrame(new Uint8Array(10).fill(4)), /reserved/);
  assert.equal(decodeFrame(new Uint8Array(10)).payload.length, 0);
});

test('decodeFrame reads a view into a larger buffer without copying', () => {
  const big = new Uint8Array(32);
  big.set(encodeFrame({ keyframe: true, track: 2, pts: 40000 }, new Uint8Array([1, 2, 3])), 5);
  const frame = decodeFrame(big.subarray(5, 18));
  assert.equal(frame.pts, 40000);
  assert.deepEqual([...frame.payload], [1, 2, 3]);
  assert.equal(frame.payload.buffer, big.buffer);
});

test('OpusHead is the 19-byte RFC 7845 identification header', () => {
  const head = buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 44100 });
  assert.equal(head.length, 19);
  assert.equal(String.fromCharCode(...head.subarray(0, 8)), 'OpusHead');
  assert.deepEqual([...head.subarray(8)], [1, 2, 0x38, 0x01, 0x44, 0xac, 0, 0, 0, 0, 0]);
  const parsed = parseOpusHead(head);
  assert.equal(parsed.channels, 2);
  assert.equal(parsed.preSkip, 312);
  assert.equal(parsed.inputSampleRate, 44100);
  assert.deepEqual(parsed.channelMapping, [0, 1]);
  assert.equal(parseOpusHead(new Uint8Array(19)), null);
  assert.throws(() => buildOpusHead({ channels: 3 }));
});

test('events and titles', () => {
  assert.deepEqual(parseEvent('{"type":"skipped","frames":3}'), { type: 'skipped', frames: 3 });
  assert.equal(parseEvent('nope'), null);
  assert.equal(parseEvent('[1]'), null);
  assert.equal(displayTitle({ title: 'Song', artist: 'Band' }), 'Band - Song');
  assert.equal(displayTitle({ artist: 'Band' }), 'Band');
  assert.equal(displayTitle(null), '');
});
