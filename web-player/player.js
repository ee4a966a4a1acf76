// @ts-check
// The listening engine: one stream's WebSocket → per-track decoders → the jitter worklet (audio)
// and a canvas (video). Owns timing: which pts is being heard, how far behind live that is,
// and when a metadata change becomes "now playing". No DOM beyond the canvas it is given.

import { ReconnectingSocket } from './socket.js';
import { decodeFrame, parseEvent } from './protocol.js';
import { WasmOpusDecoder, WebCodecsAudioDecoder, loadWasmOpus, webCodecsCanDecode } from './decoder.js';
import { VideoRenderer } from './video.js';
import { errorMessage, fetchStreams, wsUrl } from './api.js';
import { showNowPlaying } from './media-session.js';

const TAP_SAMPLES = 16384; // decoded mono PCM kept for analysis (~340 ms at 48 kHz)
const METADATA_MAX_WAIT_MS = 15_000; // show a pending title anyway if playback never reaches it

/** @typedef {import('./protocol.js').Track} Track */
/** @typedef {import('./protocol.js').Metadata} Metadata */
/** @typedef {import('./decoder.js').AudioTrackDecoder} AudioTrackDecoder */

/**
 * The worklet's report (jitter-worklet.js): the jitter buffer's stats at context time `time`.
 * @typedef {{type: 'stats', time: number} & import('./jitter.js').JitterStats} PlaybackStats
 */

/**
 * Everything the UI shows, as one snapshot.
 * @typedef {object} PlayerStatus
 * @property {'websocket'|'hls'} mode which player (hls-player.js is the other)
 * @property {import('./socket.js').SocketState} connection
 * @property {boolean} live whether the stream has a source now
 * @property {string} decoder "WebCodecs", "WASM" or "" before the first track
 * @property {'element'|'direct'} output the audio path
 * @property {Metadata|null} nowPlaying metadata being heard
 * @property {number|null} behindLiveMs newest pts received minus pts heard, plus output latency
 * @property {number} level peak output level 0..1 (pre-volume)
 * @property {string} message last notable event, for the status line
 * @property {Track[]} tracks
 * @property {Record<string, number>} counters messages, frames and events since play()
 * @property {PlaybackStats|null} playback the worklet's last report
 * @property {number} newestAudioPts
 * @property {number|undefined} newestDecodedPts
 * @property {{decoded: number, drawn: number, dropped: number}|null} video
 * @property {import('./hls-player.js').HlsState|null} hls HLS mode's element and engine
 */

/** Plays one stream. Create it inside a user gesture (it makes an AudioContext). */
export class Player {
  /**
   * @param {{stream: string, canvas?: HTMLCanvasElement|null, decoder?: 'auto'|'wasm'|'webcodecs',
   *   output?: 'auto'|'element'|'direct',
   *   onChange?: (p: Player) => void, access?: {expires: string, sig: string}|null}} opts
   *   `access` is the signed-link part of a private stream's URL (see `onair sign`);
   *   `output` 'element' plays through an <audio> element (phones: lock-screen controls, and
   *   iOS plays it with the ring/silent switch on silent), 'auto' does so on touch screens only
   */
  constructor({ stream, canvas = null, decoder = 'auto', onChange = () => {}, access = null, output = 'auto' }) {
    /** @type {'websocket'} */
    this.mode = 'websocket';
    this.output = output === 'auto' ? (matchMedia('(pointer: coarse)').matches ? 'element' : 'direct') : output;
    this.stream = stream;
    this.canvas = canvas;
    this.preferredDecoder = decoder;
    this.onChange = onChange;
    this.access = access;
    const query = access ? `?${new URLSearchParams(access)}` : '';
    this.url = wsUrl(`/listen/${encodeURIComponent(stream)}${query}`);
    /** @type {import('./socket.js').SocketState} */
    this.connection = 'stopped';
    this.live = false;
    /** @type {Track[]} */
    this.tracks = [];
    this.message = '';
    this.segment = 0;
    /** @type {{id: number, track: Track, decoder: AudioTrackDecoder, needKey: boolean, configured: boolean}|null} */
    this.audio = null;
    /** @type {{id: number, track: Track, renderer: VideoRenderer}|null} */
    this.video = null;
    this.decoderName = '';
    this.useWasm = false;
    /** @type {Metadata|null} */
    this.nowPlaying = null;
    /** @type {Array<{meta: Metadata, pts: number, segment: number, at: number}>} */
    this.pendingMeta = [];
    /** @type {PlaybackStats|null} */
    this.playback = null; // last stats from the worklet
    this.newestAudioPts = 0;
    this.newestAudioSegment = 0;
    this.counters = { messages: 0, bytes: 0, audioFrames: 0, audioDecoded: 0, discarded: 0, skipped: 0, skipEvents: 0, errors: 0, hellos: 0 };
    this.tap = new Float32Array(TAP_SAMPLES);
    this.tapPos = 0;
    this.tapRate = 48000;
    /** @type {Float32Array<ArrayBuffer>|null} */
    this.levelBuf = null;
    this.volume = 1;
    this.dropNext = 0; // debug: frames to discard, to simulate a skip without the relay
    this.dropTotal = 0;
    this.raf = 0;
  }

  /** Starts audio and connects. Call from a click/keypress so the AudioContext may start. */
  async play() {
    if (this.ctx) return;
    this.setMessage('starting audio');
    showNowPlaying(this.stream, this.nowPlaying);
    // One context at the Opus rate spares a resampling step where the device allows it.
    try {
      this.ctx = new AudioContext({ latencyHint: 'interactive', sampleRate: 48000 });
    } catch {
      this.ctx = new AudioContext({ latencyHint: 'interactive' });
    }
    const resumed = this.ctx.resume(); // inside the user gesture, before any await
    /** @type {AudioNode} */
    let sink = this.ctx.destination;
    if (this.output === 'element') {
      const stream = this.ctx.createMediaStreamDestination();
      this.element = new Audio();
      this.element.srcObject = stream.stream;
      this.element.play().catch((err) => this.onError('audio output', err)); // also in the gesture
      sink = stream;
    }
    const probe = { codec: 'opus', sample_rate: 48000, channels: 2 };
    this.useWasm = this.preferredDecoder === 'wasm' || (this.preferredDecoder !== 'webcodecs' && !(await webCodecsCanDecode(probe)));
    if (this.useWasm) await loadWasmOpus();
    await this.ctx.audioWorklet.addModule(new URL('jitter-worklet.js', import.meta.url));
    this.node = new AudioWorkletNode(this.ctx, 'onair-jitter', { numberOfInputs: 0, outputChannelCount: [2] });
    this.node.port.onmessage = ({ data }) => this.onPlayback(data);
    this.analyser = new AnalyserNode(this.ctx, { fftSize: 2048 });
    this.gain = new GainNode(this.ctx, { gain: this.volume });
    this.node.connect(this.analyser).connect(this.gain).connect(sink);
    await resumed;
    this.socket = new ReconnectingSocket(() => this.url, {
      onState: (state) => {
        this.connection = state;
        this.changed();
      },
      onMessage: (data) => (typeof data === 'string' ? this.onText(data) : this.onBinary(data)),
      onClose: ({ code, reason, wasOpen, retryInMs }) => {
        const retry = `reconnecting in ${(retryInMs / 1000).toFixed(1)} s`;
        this.setMessage(`${closeReason(code, reason, wasOpen)}; ${retry}`);
        if (!wasOpen) this.explainRefusal().then((why) => this.socket && this.connection !== 'open' && this.setMessage(`${why}; retrying`));
        if (this.video) this.video.renderer.reset();
      },
    });
    this.socket.start();
    const tick = () => {
      this.raf = requestAnimationFrame(tick);
      this.video?.renderer.render(this.audio && this.playback?.state === 'playing' ? this.heardClock() : null);
    };
    this.raf = requestAnimationFrame(tick);
  }

  /** Stops playback and disconnects. */
  async stop() {
    cancelAnimationFrame(this.raf);
    this.socket?.stop();
    this.socket = null;
    this.audio?.decoder.close();
    this.video?.renderer.close();
    this.audio = this.video = null;
    this.playback = null;
    if (this.element) {
      this.element.pause();
      this.element.srcObject = null;
      this.element = null;
    }
    const ctx = this.ctx;
    this.ctx = null;
    this.connection = 'stopped';
    this.setMessage('stopped');
    await ctx?.close();
  }

  /** @param {number} volume 0..1 */
  setVolume(volume) {
    this.volume = volume;
    if (this.gain && this.ctx) this.gain.gain.setTargetAtTime(volume, this.ctx.currentTime, 0.02);
  }

  /** Peak level (0..1) of what the worklet is playing, before the volume control. */
  level() {
    if (!this.analyser) return 0;
    const buf = (this.levelBuf ??= new Float32Array(this.analyser.fftSize));
    this.analyser.getFloatTimeDomainData(buf);
    let peak = 0;
    for (const v of buf) peak = Math.max(peak, Math.abs(v));
    return peak;
  }

  /**
   * The most recent decoded PCM (mono, first channel), oldest first, for analysis.
   * @returns {{sampleRate: number, samples: Float32Array}}
   */
  recentPcm() {
    const out = new Float32Array(TAP_SAMPLES);
    out.set(this.tap.subarray(this.tapPos));
    out.set(this.tap.subarray(0, this.tapPos), TAP_SAMPLES - this.tapPos);
    return { sampleRate: this.tapRate, samples: out };
  }

  /** @returns {PlayerStatus} */
  status() {
    const clock = this.heardClock();
    let behindLiveMs = null;
    if (clock && this.newestAudioSegment === clock.segment && this.playback?.state === 'playing') {
      behindLiveMs = Math.max(0, (this.newestAudioPts - clock.pts) / 1000);
    }
    const r = this.video?.renderer;
    return {
      mode: 'websocket',
      connection: this.connection,
      live: this.live,
      decoder: this.decoderName,
      output: this.output,
      nowPlaying: this.nowPlaying,
      behindLiveMs,
      level: this.level(),
      message: this.message,
      tracks: this.tracks,
      counters: { ...this.counters },
      playback: this.playback,
      newestAudioPts: this.newestAudioPts,
      newestDecodedPts: this.newestDecodedPts,
      video: r ? { decoded: r.decoded, drawn: r.drawn, dropped: r.dropped } : null,
      hls: null,
    };
  }

  /**
   * Debug: discard the next `frames` frames and then act as if the relay had sent
   * `{"type":"skipped","frames":N}`. Exercises gap concealment without a slow network.
   * @param {number} frames
   */
  simulateSkip(frames) {
    this.dropNext = this.dropTotal = frames;
  }

  /**
   * @private Browsers hide a refused handshake's status (401/403/404/503), so ask the API
   * what is likely wrong.
   */
  async explainRefusal() {
    let streams;
    try {
      streams = await fetchStreams();
    } catch {
      return 'cannot reach the relay';
    }
    const s = streams.find((x) => x.name === this.stream);
    if (!s) return `no stream named “${this.stream}” on this relay`;
    if (this.access) return 'this listening link is invalid or has expired';
    return 'the relay refused to connect: the stream may be private (it needs a signed link) or full';
  }

  /** @private Pts (µs) and segment being heard now, or null before playback starts. */
  heardClock() {
    const p = this.playback;
    if (!p || !this.ctx) return null;
    // The worklet reported where it was at p.time; the speakers are outputLatency behind that.
    const since = Math.max(0, this.ctx.currentTime - p.time) * 1e6 * (p.state === 'playing' ? p.speed : 0);
    return { pts: p.playingPts + since - this.outputLatencyMs() * 1000, segment: p.segment };
  }

  /** @private */
  outputLatencyMs() {
    return ((this.ctx?.outputLatency || this.ctx?.baseLatency) ?? 0) * 1000;
  }

  /**
   * @private
   * @param {string} text
   */
  onText(text) {
    const msg = parseEvent(text);
    if (!msg) return;
    switch (msg.type) {
      case 'hello':
        this.counters.hellos++;
        this.live = !!msg.live;
        this.newTimeline(msg.tracks ?? []);
        if (msg.metadata) this.showNow(msg.metadata);
        this.setMessage(msg.live ? 'connected' : 'connected; the stream is offline, waiting for its source');
        break;
      case 'metadata':
        this.queueMetadata(msg);
        break;
      case 'source':
        this.live = msg.state === 'online';
        if (this.live) this.newTimeline(msg.tracks ?? this.tracks);
        this.setMessage(this.live ? 'source online' : 'source offline; waiting for it to come back');
        break;
      case 'skipped':
        this.onSkipped(msg.frames ?? 0);
        break;
    }
  }

  /**
   * @private A new connection or source: pts may jump, decoders restart at the next header/keyframe.
   * @param {Track[]} tracks
   */
  newTimeline(tracks) {
    this.segment++;
    this.tracks = tracks;
    const audioTrack = tracks.find((t) => t.kind === 'audio');
    const videoTrack = tracks.find((t) => t.kind === 'video');
    if (this.audio && (!audioTrack || !sameTrack(this.audio.track, audioTrack))) {
      this.audio.decoder.close();
      this.audio = null;
    }
    if (audioTrack && !this.audio) {
      /** @param {import('./decoder.js').Pcm} pcm */
      const onPcm = (pcm) => this.onPcm(pcm);
      /** @param {Error} err */
      const onError = (err) => this.onError('audio', err);
      let decoder;
      try {
        decoder = this.useWasm ? new WasmOpusDecoder(audioTrack, onPcm, onError) : new WebCodecsAudioDecoder(audioTrack, onPcm, onError);
      } catch (err) {
        this.onError('audio', err);
      }
      if (decoder) {
        this.audio = { id: audioTrack.id, track: audioTrack, decoder, needKey: true, configured: false };
        this.decoderName = decoder.name;
      }
    }
    if (this.audio) this.audio.needKey = true;
    if (this.video && (!videoTrack || !sameTrack(this.video.track, videoTrack))) {
      this.video.renderer.close();
      this.video = null;
    }
    if (videoTrack && !this.video && this.canvas && VideoRenderer.supported(videoTrack)) {
      const renderer = new VideoRenderer(this.canvas, videoTrack, (err) => this.onError('video', err));
      this.video = { id: videoTrack.id, track: videoTrack, renderer };
    }
    this.video?.renderer.reset();
    // Titles waiting for a pts of the old timeline will never be reached: show the latest now.
    const latest = this.pendingMeta.pop();
    if (latest) this.showNow(latest.meta);
    this.pendingMeta = [];
    this.changed();
  }

  /**
   * @private
   * @param {ArrayBuffer} buffer
   */
  onBinary(buffer) {
    this.counters.messages++;
    this.counters.bytes += buffer.byteLength;
    let frame;
    try {
      frame = decodeFrame(buffer);
    } catch (err) {
      return this.onError('frame', err);
    }
    if (this.dropNext > 0 && !frame.header) {
      if (--this.dropNext === 0) this.onSkipped(this.dropTotal);
      return;
    }
    if (this.audio?.id === frame.track) {
      const a = this.audio;
      if (frame.header) {
        a.decoder.configure(frame.payload);
        a.configured = true;
        return;
      }
      if (a.needKey && !frame.keyframe) return void this.counters.discarded++;
      a.needKey = false;
      if (!a.configured) {
        a.decoder.configure(null); // no stored header (e.g. a raw source): codec defaults
        a.configured = true;
      }
      this.counters.audioFrames++;
      this.newestAudioPts = frame.pts;
      this.newestAudioSegment = this.segment;
      try {
        a.decoder.decode(frame.pts, frame.payload);
      } catch (err) {
        this.onError('audio', err);
      }
    } else if (this.video?.id === frame.track) {
      if (frame.header) return this.video.renderer.configure(frame.payload);
      try {
        this.video.renderer.decode(frame, this.segment);
      } catch (err) {
        this.onError('video', err);
      }
    }
  }

  /**
   * @private
   * @param {number} frames
   */
  onSkipped(frames) {
    this.counters.skipped += frames;
    this.counters.skipEvents++;
    // The relay resumes at a keyframe; the jitter buffer sees the pts jump and cross-fades.
    this.video?.renderer.reset();
    this.setMessage(`fell behind: skipped ${frames} frames to catch up`);
  }

  /**
   * @private
   * @param {import('./decoder.js').Pcm} pcm
   */
  onPcm({ pts, sampleRate, channels }) {
    this.counters.audioDecoded++;
    this.newestDecodedPts = pts;
    this.tapRate = sampleRate;
    let src = channels[0];
    if (src.length > TAP_SAMPLES) src = src.subarray(src.length - TAP_SAMPLES);
    const first = Math.min(src.length, TAP_SAMPLES - this.tapPos);
    this.tap.set(src.subarray(0, first), this.tapPos);
    this.tap.set(src.subarray(first), 0);
    this.tapPos = (this.tapPos + src.length) % TAP_SAMPLES;
    this.node?.port.postMessage(
      { type: 'pcm', pts, sampleRate, segment: this.segment, channels },
      channels.map((c) => c.buffer),
    );
  }

  /**
   * @private
   * @param {PlaybackStats} stats
   */
  onPlayback(stats) {
    if (stats.type !== 'stats') return;
    // Once sound flows, "connected" says nothing the state does not; keep real news only.
    if (stats.state === 'playing' && this.playback?.state !== 'playing' && /^(connected|source online)$/.test(this.message)) this.message = '';
    this.playback = stats;
    this.applyDueMetadata();
    this.changed();
  }

  /**
   * @private
   * @param {Metadata} meta
   */
  queueMetadata(meta) {
    if (meta.pts == null) return this.showNow(meta);
    this.pendingMeta.push({ meta, pts: meta.pts, segment: this.segment, at: performance.now() });
    this.applyDueMetadata();
  }

  /** @private Show the newest pending title whose pts has been heard. */
  applyDueMetadata() {
    const clock = this.heardClock();
    const now = performance.now();
    let due = -1;
    this.pendingMeta.forEach((p, i) => {
      const heard = clock && (p.segment < clock.segment || (p.segment === clock.segment && p.pts <= clock.pts));
      if (heard || now - p.at > METADATA_MAX_WAIT_MS || !this.audio) due = i;
    });
    const latest = this.pendingMeta.splice(0, due + 1).pop(); // none when due is -1
    if (latest) this.showNow(latest.meta);
  }

  /**
   * @private
   * @param {Metadata} meta
   */
  showNow(meta) {
    this.nowPlaying = meta;
    showNowPlaying(this.stream, meta);
    this.changed();
  }

  /**
   * @private
   * @param {string} what
   * @param {unknown} err
   */
  onError(what, err) {
    this.counters.errors++;
    console.warn(`onair ${what}:`, err);
    this.setMessage(`${what} error: ${errorMessage(err)}`);
  }

  /**
   * @private
   * @param {string} message
   */
  setMessage(message) {
    this.message = message;
    this.changed();
  }

  /** @private */
  changed() {
    this.onChange(this);
  }
}

/**
 * @param {Track} a
 * @param {Track} b
 */
function sameTrack(a, b) {
  return a.id === b.id && a.codec === b.codec && a.channels === b.channels && a.sample_rate === b.sample_rate && a.width === b.width && a.height === b.height;
}

/**
 * A short human sentence for a listener socket close.
 * @param {number} code
 * @param {string} reason
 * @param {boolean} wasOpen
 * @returns {string}
 */
export function closeReason(code, reason, wasOpen) {
  if (!wasOpen) return 'cannot connect';
  const known = {
    1001: 'the relay is restarting',
    1006: 'connection lost',
    4008: 'too far behind live (slow network)',
    4009: 'the connection timed out',
  }[code];
  return known ?? `disconnected (${code}${reason ? `: ${reason}` : ''})`;
}
