// @ts-check
// The broadcasting engine: microphone (and camera) → WebCodecs Opus (and VP8) → the ingest
// WebSocket in the onair wire format. On every (re)connect it sends `start`, the OpusHead
// header frame and then frames; the next video frame after a connect is a keyframe.
//
// A failed WebSocket handshake hides its HTTP status from scripts, so after a connection that
// never opened we ask `GET /api/streams`: no such stream → say so and stop; stream live →
// "busy (another source is on air) or wrong key"; stream idle → "wrong key". See explainRefusal().

import { ReconnectingSocket } from './socket.js';
import { buildOpusHead, encodeFrame } from './protocol.js';
import { captureAudio, captureVideo } from './capture.js';
import { errorMessage, fetchStreams, wsUrl } from './api.js';

const AUDIO_TRACK = 0;
const VIDEO_TRACK = 1;
const KEYFRAME_INTERVAL_MS = 2000;
const MAX_SOCKET_BUFFER_BYTES = 512 * 1024; // beyond this the network is not keeping up: drop video
const OPUS_PRE_SKIP = 312; // libopus' lookahead at 48 kHz
const BITRATE_WINDOW_MS = 2000;

/**
 * @typedef {object} BroadcastOptions
 * @property {string} stream
 * @property {string} key
 * @property {boolean} camera
 * @property {number} [audioBitrate] bits/s, default 128000
 * @property {number} [videoBitrate] bits/s, default 1000000
 * @property {boolean} [captureFallback] capture through an AudioWorklet and a <video> element
 *   even where MediaStreamTrackProcessor exists (to test the Firefox/Safari path)
 */

/** @typedef {'stopped'|'starting'|'connecting'|'live'|'reconnecting'} BroadcastState */

/** @type {Required<BroadcastOptions>} */
const DEFAULT_OPTIONS = { stream: '', key: '', camera: false, audioBitrate: 128000, videoBitrate: 1_000_000, captureFallback: false };

/** One broadcasting session; `start()` asks for the devices and goes on air. */
export class Broadcaster {
  /** @param {{onChange?: (b: Broadcaster) => void, preview?: HTMLVideoElement|null}} opts */
  constructor({ onChange = () => {}, preview = null } = {}) {
    this.onChange = onChange;
    this.preview = preview;
    /** @type {BroadcastState} */
    this.state = 'stopped';
    this.message = '';
    this.error = false;
    this.level = 0;
    /** @type {Array<[number, number]>} */
    this.sent = []; // [time ms, bytes] for the bitrate window
    this.counters = { audioFrames: 0, videoFrames: 0, videoKeyframes: 0, videoDropped: 0, bytes: 0, connects: 0 };
    this.everLive = false;
    /** @type {Array<() => void>} */
    this.stops = [];
    /** Longest time between video keyframes (a listener joining waits at most this long). */
    this.keyframeIntervalMs = KEYFRAME_INTERVAL_MS;
    // The session's, set by start() and by the first captured audio:
    this.opts = DEFAULT_OPTIONS;
    this.t0 = 0; // performance.now() at start(): the origin of every pts we send
    this.audioChannels = 0; // what the audio encoder was configured with
    this.audioInputRate = 0; // the microphone's rate, for OpusHead
    /** @type {import('./protocol.js').Track[]|null} what `start` declares, once audio arrives */
    this.tracks = null;
    /** @type {number|null} page clock minus capture clock, µs, from the first audio chunk */
    this.audioOffset = null;
    /** @type {number|null} the same for video */
    this.videoOffset = null;
    this.wantKeyframe = true; // the next video frame is encoded as a keyframe
    this.lastKeyframeAt = 0; // performance.now() of the last one
    /** @type {number|undefined} pts of the newest encoded audio */
    this.lastAudioPts = undefined;
    /** @type {{title?: string, artist?: string}|undefined} resent after each reconnect */
    this.pendingMeta = undefined;
    /** @type {AudioEncoder|null} */
    this.audioEncoder = null;
    /** @type {VideoEncoder|null} */
    this.videoEncoder = null;
  }

  /**
   * Opens the devices and connects. Rejects (with a sentence for the user) when this browser
   * cannot encode Opus/VP8 or the devices cannot be opened.
   * @param {BroadcastOptions} opts
   */
  async start(opts) {
    if (this.state !== 'stopped') return;
    this.opts = { ...DEFAULT_OPTIONS, ...opts };
    this.setState('starting', 'asking for the microphone' + (opts.camera ? ' and camera' : ''));
    try {
      await checkEncoders(opts.camera);
    } catch (err) {
      this.state = 'stopped';
      throw err;
    }
    this.everLive = false;
    this.t0 = performance.now();
    try {
      this.media = await navigator.mediaDevices.getUserMedia({
        // Broadcast audio: phone-call processing would pump music and colour the voice.
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: { ideal: 2 } },
        video: opts.camera ? { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 25 } } : false,
      });
    } catch (err) {
      this.state = 'stopped';
      throw new Error(deviceError(err));
    }
    this.tracks = null;
    this.audioOffset = null;
    this.videoOffset = null;
    this.wantKeyframe = true;
    this.lastKeyframeAt = 0;
    // Started by the first captured audio: only then do we know what to declare in `start`.
    this.socket = new ReconnectingSocket(
      () => wsUrl(`/ingest/${encodeURIComponent(this.opts.stream)}?key=${encodeURIComponent(this.opts.key)}`),
      {
        onOpen: () => this.onOpen(),
        onClose: (info) => this.onClose(info),
      },
    );
    const [mic] = this.media.getAudioTracks();
    const [cam] = this.media.getVideoTracks();
    if (cam && this.preview) {
      this.preview.srcObject = new MediaStream([cam]);
      await this.preview.play().catch(() => {});
    }
    const fallback = !!this.opts.captureFallback;
    this.stops.push(await captureAudio(mic, (data) => this.onAudioData(data), fallback));
    if (cam) this.stops.push(await captureVideo(cam, (frame) => this.onVideoFrame(frame), this.preview, fallback));
    this.setState('connecting', 'connecting to the relay');
  }

  /**
   * Stops sending and releases the devices.
   * @param {string} [message] for the status line
   */
  stop(message = 'off air') {
    this.socket?.stop();
    this.socket = null;
    for (const stop of this.stops.splice(0)) stop();
    this.media?.getTracks().forEach((t) => t.stop());
    this.media = null;
    if (this.preview) this.preview.srcObject = null;
    for (const enc of [this.audioEncoder, this.videoEncoder]) if (enc && enc.state !== 'closed') enc.close();
    this.audioEncoder = this.videoEncoder = null;
    this.level = 0;
    this.setState('stopped', message);
  }

  /**
   * Sends now-playing information, applied from the audio being captured now.
   * @param {{title?: string, artist?: string}} meta
   */
  sendMetadata(meta) {
    this.pendingMeta = meta; // sent again after a reconnect
    /** @type {{type: 'metadata', title?: string, artist?: string, pts?: number}} */
    const msg = { type: 'metadata', ...meta };
    if (this.lastAudioPts != null) msg.pts = this.lastAudioPts;
    return this.socket?.send(JSON.stringify(msg)) ?? false;
  }

  /** Bits per second sent over the last two seconds. */
  bitrate() {
    const now = performance.now();
    while (this.sent.length && now - this.sent[0][0] > BITRATE_WINDOW_MS) this.sent.shift();
    const bytes = this.sent.reduce((n, [, b]) => n + b, 0);
    return (bytes * 8) / (BITRATE_WINDOW_MS / 1000);
  }

  /** @private Microseconds on this page's clock, the timeline of every track we send. */
  nowUs() {
    return Math.round((performance.now() - this.t0) * 1000);
  }

  /**
   * @private
   * @param {AudioData} data
   */
  onAudioData(data) {
    const socket = this.socket;
    if (!socket) return data.close(); // stopped while a chunk was in flight
    try {
      this.level = Math.max(this.level * 0.9, peak(data));
      const encoder = this.audioEncoder ?? this.openAudioEncoder(data, socket);
      this.audioOffset ??= this.nowUs() - data.timestamp;
      if (encoder.encodeQueueSize < 20) encoder.encode(data);
    } catch (err) {
      this.fail(`audio encoder: ${errorMessage(err)}`);
    } finally {
      data.close();
    }
  }

  /**
   * @private Configured from the first AudioData: its real rate and channel count.
   * @param {AudioData} data
   * @param {ReconnectingSocket} socket started once the tracks are known
   * @returns {AudioEncoder}
   */
  openAudioEncoder(data, socket) {
    this.audioChannels = Math.min(2, data.numberOfChannels);
    this.audioInputRate = data.sampleRate;
    const encoder = new AudioEncoder({
      output: (chunk) => this.onAudioChunk(chunk),
      error: (err) => this.fail(`audio encoder: ${err.message}`),
    });
    encoder.configure({
      codec: 'opus',
      sampleRate: data.sampleRate,
      numberOfChannels: data.numberOfChannels,
      bitrate: this.opts.audioBitrate,
      opus: { frameDuration: 20_000 },
    });
    this.audioEncoder = encoder;
    this.tracks = this.declareTracks();
    socket.start();
    return encoder;
  }

  /**
   * @private
   * @returns {import('./protocol.js').Track[]}
   */
  declareTracks() {
    /** @type {import('./protocol.js').Track[]} */
    const tracks = [{ id: AUDIO_TRACK, kind: 'audio', codec: 'opus', sample_rate: 48000, channels: this.audioChannels, bitrate: this.opts.audioBitrate }];
    const cam = this.media?.getVideoTracks()[0];
    if (cam) {
      const { width = 640, height = 480 } = cam.getSettings();
      tracks.push({ id: VIDEO_TRACK, kind: 'video', codec: 'vp8', width, height, bitrate: this.opts.videoBitrate });
    }
    return tracks;
  }

  /**
   * @private
   * @param {EncodedAudioChunk} chunk
   */
  onAudioChunk(chunk) {
    const pts = chunk.timestamp + /** @type {number} */ (this.audioOffset); // set before the first encode
    this.lastAudioPts = pts;
    this.counters.audioFrames++;
    this.sendChunk(AUDIO_TRACK, true, pts, chunk);
  }

  /**
   * @private
   * @param {VideoFrame} frame
   */
  onVideoFrame(frame) {
    try {
      if (this.state !== 'live' || !this.socket) return;
      const encoder = this.videoEncoder && this.videoEncoder.state !== 'closed' ? this.videoEncoder : this.openVideoEncoder(frame);
      this.videoOffset ??= this.nowUs() - frame.timestamp;
      if (this.socket.bufferedAmount > MAX_SOCKET_BUFFER_BYTES || encoder.encodeQueueSize > 3) {
        this.counters.videoDropped++; // never reached the encoder, so nothing references it
        return;
      }
      const now = performance.now();
      const keyFrame = this.wantKeyframe || now - this.lastKeyframeAt >= this.keyframeIntervalMs;
      if (keyFrame) {
        this.wantKeyframe = false;
        this.lastKeyframeAt = now;
      }
      encoder.encode(frame, { keyFrame });
    } catch (err) {
      this.fail(`video encoder: ${errorMessage(err)}`);
    } finally {
      frame.close();
    }
  }

  /**
   * @private
   * @param {VideoFrame} frame
   * @returns {VideoEncoder}
   */
  openVideoEncoder(frame) {
    const encoder = new VideoEncoder({
      output: (chunk) => {
        if (chunk.type === 'key') this.counters.videoKeyframes++;
        this.counters.videoFrames++;
        const pts = chunk.timestamp + /** @type {number} */ (this.videoOffset); // set before the first encode
        this.sendChunk(VIDEO_TRACK, chunk.type === 'key', pts, chunk);
      },
      error: (err) => this.fail(`video encoder: ${err.message}`),
    });
    encoder.configure({
      codec: 'vp8',
      width: frame.displayWidth,
      height: frame.displayHeight,
      bitrate: this.opts.videoBitrate,
      framerate: 25,
      latencyMode: 'realtime',
    });
    this.videoEncoder = encoder;
    this.wantKeyframe = true;
    return encoder;
  }

  /**
   * @private
   * @param {number} track
   * @param {boolean} keyframe
   * @param {number} pts
   * @param {EncodedAudioChunk|EncodedVideoChunk} chunk
   */
  sendChunk(track, keyframe, pts, chunk) {
    if (this.state !== 'live') return;
    const payload = new Uint8Array(chunk.byteLength);
    chunk.copyTo(payload);
    this.send(encodeFrame({ keyframe, track, pts: Math.max(0, pts) }, payload));
  }

  /**
   * @private
   * @param {Uint8Array<ArrayBuffer>} bytes
   */
  send(bytes) {
    if (this.socket?.send(bytes)) {
      const now = performance.now();
      this.counters.bytes += bytes.byteLength;
      this.sent.push([now, bytes.byteLength]);
      // Pruned here too: a hidden tab gets no animation frames to call bitrate().
      while (now - this.sent[0][0] > BITRATE_WINDOW_MS) this.sent.shift();
    }
  }

  /** @private A new connection: declare the tracks, send the codec header, resume. */
  onOpen() {
    this.counters.connects++;
    this.socket?.send(JSON.stringify({ type: 'start', tracks: this.tracks }));
    const head = buildOpusHead({ channels: this.audioChannels, preSkip: OPUS_PRE_SKIP, inputSampleRate: this.audioInputRate });
    this.send(encodeFrame({ header: true, track: AUDIO_TRACK, pts: this.lastAudioPts ?? 0 }, head));
    this.wantKeyframe = true;
    this.everLive = true;
    this.error = false;
    this.setState('live', 'on air');
    if (this.pendingMeta) this.sendMetadata(this.pendingMeta);
  }

  /**
   * @private
   * @param {{code: number, reason: string, wasOpen: boolean, retryInMs: number}} info
   * @returns {boolean} whether to reconnect
   */
  onClose({ code, reason, wasOpen, retryInMs }) {
    const retry = `retrying in ${(retryInMs / 1000).toFixed(1)} s`;
    if (wasOpen) {
      const fatal = { 4000: 'the relay refused our start message', 4003: 'protocol error', 4004: 'protocol error', 4005: 'the relay refused our metadata', 4010: 'an operator took this source off the air' }[code];
      if (fatal) {
        this.fail(`${fatal}${reason ? `: ${reason}` : ''}`);
        return false;
      }
      const why = { 1001: 'the relay is restarting', 4006: 'sending faster than the stream allows', 4009: 'the connection timed out', 4011: 'another source went live on another node' }[code] ?? `connection lost${code && code !== 1006 ? ` (${code}${reason ? `: ${reason}` : ''})` : ''}`;
      this.setState('reconnecting', `${why}; ${retry}`, true);
      return true;
    }
    this.setState('reconnecting', `cannot connect; ${retry}`, true);
    this.explainRefusal().then((verdict) => {
      if (!this.socket) return;
      if (verdict.fatal && !this.everLive) this.stop(verdict.message);
      else this.setState('reconnecting', `${verdict.message}; retrying`, true);
      this.error = true;
      this.onChange(this);
    });
    return true;
  }

  /**
   * Why did the ingest handshake fail? Browsers hide the status (401/404/409), so ask the API.
   * @returns {Promise<{message: string, fatal: boolean}>}
   */
  async explainRefusal() {
    let streams;
    try {
      streams = await fetchStreams();
    } catch {
      return { message: 'cannot reach the relay', fatal: false };
    }
    const s = streams.find((x) => x.name === this.opts.stream);
    if (!s) return { message: `no stream named “${this.opts.stream}” on this relay`, fatal: true };
    if (s.live) return { message: 'stream busy: another source is on air (or the key is wrong)', fatal: true };
    return { message: 'wrong key for this stream', fatal: true };
  }

  /**
   * @private
   * @param {string} message
   */
  fail(message) {
    console.warn('onair broadcast:', message);
    this.stop(message);
    this.error = true;
    this.onChange(this);
  }

  /**
   * @private
   * @param {BroadcastState} state
   * @param {string} message
   * @param {boolean} [error]
   */
  setState(state, message, error = false) {
    this.state = state;
    this.message = message;
    this.error = error;
    this.onChange(this);
  }
}

/**
 * Refuses early, with a sentence, in browsers that cannot encode what we send.
 * @param {boolean} camera
 */
async function checkEncoders(camera) {
  const advice = 'use a recent Chrome, Edge or Firefox';
  const opus = typeof AudioEncoder !== 'undefined' && (await AudioEncoder.isConfigSupported({ codec: 'opus', sampleRate: 48000, numberOfChannels: 2 }).catch(() => ({ supported: false }))).supported;
  if (!opus) throw new Error(`This browser cannot encode Opus audio (WebCodecs): ${advice}.`);
  if (!camera) return;
  const vp8 = typeof VideoEncoder !== 'undefined' && (await VideoEncoder.isConfigSupported({ codec: 'vp8', width: 640, height: 480 }).catch(() => ({ supported: false }))).supported;
  if (!vp8) throw new Error(`This browser cannot encode VP8 video (WebCodecs): ${advice}, or go on air without the camera.`);
}

/**
 * Peak absolute sample of the first channel.
 * @param {AudioData} data
 */
function peak(data) {
  const n = data.numberOfFrames;
  const buf = new Float32Array(n);
  data.copyTo(buf, { planeIndex: 0, format: 'f32-planar' });
  let p = 0;
  for (let i = 0; i < n; i++) p = Math.max(p, Math.abs(buf[i]));
  return p;
}

/**
 * A sentence for a getUserMedia failure.
 * @param {unknown} err
 */
function deviceError(err) {
  switch (err instanceof Error ? err.name : '') { // a DOMException
    case 'NotAllowedError':
      return 'Permission to use the microphone (or camera) was refused. Allow it in the browser and try again.';
    case 'NotFoundError':
      return 'No microphone (or camera) found.';
    case 'NotReadableError':
      return 'The microphone (or camera) is in use by another program.';
    default:
      return `Cannot open the devices: ${errorMessage(err)}`;
  }
}
