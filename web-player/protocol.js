// @ts-check
// The onair wire format (docs/PROTOCOL.md): the 10-byte binary frame header, the OpusHead
// codec header, and the shape of text messages. Pure functions with no DOM, so the player, the
// broadcaster and `node --test` share one implementation.

/** Size of the binary frame header: u8 flags, u8 track, u64 pts (big-endian). */
export const FRAME_HEADER_BYTES = 10;
/** Flag bit 0: a decoder may start at this frame. */
export const FLAG_KEYFRAME = 0x01;
/** Flag bit 1: codec configuration (e.g. OpusHead) for the track. */
export const FLAG_HEADER = 0x02;
/** Bits that must be zero. */
export const FLAG_RESERVED = 0xfc;

/**
 * One binary frame: header fields and a view of the payload (no copy).
 * @typedef {{keyframe: boolean, header: boolean, track: number, pts: number, payload: Uint8Array}} Frame
 */

/**
 * A track as a source declares it in `start` and listeners get it in `hello` and `source`.
 * @typedef {object} Track
 * @property {number} id 0-255
 * @property {'audio'|'video'} kind
 * @property {string} codec `opus`, `mp3`, `aac`, `vorbis`, `flac`, `vp8`, `vp9`, `h264` or `av1`
 * @property {number} [sample_rate] audio
 * @property {number} [channels] audio
 * @property {number} [width] video
 * @property {number} [height] video
 * @property {number} [bitrate] bits/s
 */

/**
 * Now playing; every field is optional. `pts` is the media time from which it applies.
 * @typedef {{title?: string, artist?: string, album?: string, url?: string, pts?: number}} Metadata
 */

/**
 * A text message from the relay to a listener (docs/PROTOCOL.md, "Messages to the listener").
 * @typedef {{type: 'hello', version: number, stream: string, live: boolean, tracks: Track[],
 *     metadata: Metadata|null, server?: string}
 *   | ({type: 'metadata'} & Metadata)
 *   | {type: 'source', state: 'online'|'offline', tracks?: Track[]}
 *   | {type: 'skipped', frames: number}} RelayEvent
 */

/**
 * Parses one binary WebSocket message into a frame.
 * `pts` is microseconds as a Number (exact up to 2^53 µs, about 285 years).
 * @param {ArrayBuffer|Uint8Array} message
 * @returns {Frame}
 * @throws {Error} when the message is shorter than the header or a reserved bit is set
 */
export function decodeFrame(message) {
  const bytes = message instanceof Uint8Array ? message : new Uint8Array(message);
  if (bytes.length < FRAME_HEADER_BYTES) {
    throw new Error(`truncated frame: ${bytes.length} bytes, the header alone is 10`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const flags = view.getUint8(0);
  if (flags & FLAG_RESERVED) throw new Error(`reserved flag bits set: 0x${flags.toString(16)}`);
  return {
    keyframe: (flags & FLAG_KEYFRAME) !== 0,
    header: (flags & FLAG_HEADER) !== 0,
    track: view.getUint8(1),
    pts: Number(view.getBigUint64(2)),
    payload: bytes.subarray(FRAME_HEADER_BYTES),
  };
}

/**
 * Builds one binary frame message: header then payload.
 * @param {{keyframe?: boolean, header?: boolean, track: number, pts: number}} head
 * @param {Uint8Array|ArrayBuffer} payload
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function encodeFrame(head, payload) {
  const data = payload instanceof Uint8Array ? payload : new Uint8Array(payload);
  const out = new Uint8Array(FRAME_HEADER_BYTES + data.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, (head.keyframe ? FLAG_KEYFRAME : 0) | (head.header ? FLAG_HEADER : 0));
  view.setUint8(1, head.track);
  view.setBigUint64(2, BigInt(Math.max(0, Math.round(head.pts))));
  out.set(data, FRAME_HEADER_BYTES);
  return out;
}

/**
 * Builds the 19-byte OpusHead identification header (RFC 7845 §5.1, channel mapping family 0).
 * Unlike the frame header, its integers are little-endian.
 * @param {{channels: number, preSkip?: number, inputSampleRate?: number, outputGain?: number}} opts
 * @returns {Uint8Array}
 */
export function buildOpusHead({ channels, preSkip = 312, inputSampleRate = 48000, outputGain = 0 }) {
  if (channels < 1 || channels > 2) throw new Error(`mapping family 0 carries 1 or 2 channels, not ${channels}`);
  const out = new Uint8Array(19);
  const view = new DataView(out.buffer);
  out.set([0x4f, 0x70, 0x75, 0x73, 0x48, 0x65, 0x61, 0x64]); // "OpusHead"
  view.setUint8(8, 1); // version
  view.setUint8(9, channels);
  view.setUint16(10, preSkip, true);
  view.setUint32(12, inputSampleRate, true);
  view.setInt16(16, outputGain, true);
  view.setUint8(18, 0); // mapping family 0: mono or stereo, no table
  return out;
}

/**
 * Reads an OpusHead header; returns null when the bytes are not one.
 * @param {Uint8Array} bytes
 * @returns {{channels: number, preSkip: number, inputSampleRate: number, outputGain: number,
 *   mappingFamily: number, streamCount: number, coupledStreamCount: number, channelMapping: number[]}|null}
 */
export function parseOpusHead(bytes) {
  if (bytes.length < 19 || String.fromCharCode(...bytes.subarray(0, 8)) !== 'OpusHead') return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const channels = view.getUint8(9);
  const mappingFamily = view.getUint8(18);
  let streamCount = 1;
  let coupledStreamCount = channels > 1 ? 1 : 0;
  let channelMapping = channels > 1 ? [0, 1] : [0];
  if (mappingFamily !== 0 && bytes.length >= 21 + channels) {
    streamCount = view.getUint8(19);
    coupledStreamCount = view.getUint8(20);
    channelMapping = Array.from(bytes.subarray(21, 21 + channels));
  }
  return {
    channels,
    preSkip: view.getUint16(10, true),
    inputSampleRate: view.getUint32(12, true),
    outputGain: view.getInt16(16, true),
    mappingFamily,
    streamCount,
    coupledStreamCount,
    channelMapping,
  };
}

/**
 * The WebCodecs codec string for a track's codec name, or null if the player cannot decode it.
 * @param {string} codec
 * @returns {string|null}
 */
export function webCodecsName(codec) {
  return {
    opus: 'opus',
    mp3: 'mp3',
    aac: 'mp4a.40.2',
    flac: 'flac',
    vorbis: 'vorbis',
    vp8: 'vp8',
    vp9: 'vp09.00.10.08',
    h264: 'avc1.42E01F',
    av1: 'av01.0.04M.08',
  }[codec] ?? null;
}

/**
 * `"artist - title"`, or whichever is present, or '' (same rule as the relay).
 * @param {{title?: string, artist?: string}|null|undefined} meta
 * @returns {string}
 */
export function displayTitle(meta) {
  if (!meta) return '';
  if (meta.artist && meta.title) return `${meta.artist} - ${meta.title}`;
  return meta.title || meta.artist || '';
}

/**
 * Parses a text message from the relay; returns null for anything that is not a typed object.
 * Only `type` is checked: the rest is as the relay sent it, and a message of a type this
 * player does not know comes back too (callers ignore it).
 * @param {string} text
 * @returns {RelayEvent|null}
 */
export function parseEvent(text) {
  try {
    const msg = JSON.parse(text);
    return msg && typeof msg === 'object' && typeof msg.type === 'string' ? msg : null;
  } catch {
    return null;
  }
}
