// @ts-check
// Audio decoders for the player: WebCodecs `AudioDecoder` where the browser can decode the
// track's codec, else a WebAssembly Opus decoder (vendor/opus-decoder.min.js, fetched by
// tests/browser/vendor.sh). Both hand the same planar Float32 PCM to the jitter worklet.

import { parseOpusHead, webCodecsName } from './protocol.js';

const MAX_DECODE_QUEUE = 250; // frames (5 s of Opus): room for a join burst; past it, drop
const WASM_SCRIPT = 'vendor/opus-decoder.min.js';

/**
 * Decoded audio handed to the jitter buffer.
 * @typedef {{pts: number, sampleRate: number, channels: Float32Array[]}} Pcm
 */

/**
 * What every audio decoder offers the player.
 * @typedef {object} AudioTrackDecoder
 * @property {string} name shown to the user: "WebCodecs" or "WASM"
 * @property {(header: Uint8Array|null) => void} configure (re)start with a codec header
 * @property {(pts: number, payload: Uint8Array) => void} decode
 * @property {() => void} close
 */

/**
 * The vendored decoder's exports (the UMD script's global), typed by the npm package it is
 * copied from.
 * @typedef {typeof import('opus-decoder')} OpusDecoderModule
 */

/**
 * Whether WebCodecs can decode this audio track here.
 * @param {{codec: string, sample_rate?: number, channels?: number}} track
 * @returns {Promise<boolean>}
 */
export async function webCodecsCanDecode(track) {
  const codec = webCodecsName(track.codec);
  if (!codec || typeof AudioDecoder === 'undefined') return false;
  try {
    const { supported } = await AudioDecoder.isConfigSupported({
      codec,
      sampleRate: track.sample_rate ?? 48000,
      numberOfChannels: track.channels ?? 2,
    });
    return !!supported;
  } catch {
    return false;
  }
}

/** WebCodecs `AudioDecoder` for any codec the browser supports. */
export class WebCodecsAudioDecoder {
  /**
   * @param {{codec: string, sample_rate?: number, channels?: number}} track
   * @param {(pcm: Pcm) => void} onPcm
   * @param {(err: Error) => void} onError
   */
  constructor(track, onPcm, onError) {
    const codec = webCodecsName(track.codec);
    if (!codec) throw new Error(`WebCodecs has no codec string for ${track.codec}`);
    this.name = 'WebCodecs';
    this.codec = codec;
    this.track = track;
    this.onPcm = onPcm;
    this.onError = onError;
    /** @type {AudioDecoder|null} */
    this.decoder = null;
    /** @type {Uint8Array|null} */
    this.header = null;
    /** @type {number[]} pts of chunks in the decoder, oldest first */
    this.inflight = [];
  }

  /** @param {Uint8Array|null} header */
  configure(header) {
    this.header = header ? header.slice() : null;
    this.close();
    const decoder = new AudioDecoder({
      output: (data) => this.output(data),
      error: (err) => {
        this.decoder = null; // a closed decoder; the next decode() builds a new one
        this.onError(err);
      },
    });
    const head = this.track.codec === 'opus' && this.header ? parseOpusHead(this.header) : null;
    /** @type {AudioDecoderConfig} */
    const config = {
      codec: this.codec,
      sampleRate: this.track.codec === 'opus' ? 48000 : this.track.sample_rate ?? 48000,
      numberOfChannels: head?.channels ?? this.track.channels ?? 2,
    };
    if (this.header) config.description = this.header;
    decoder.configure(config);
    this.decoder = decoder;
    this.inflight = [];
  }

  /**
   * @param {number} pts microseconds
   * @param {Uint8Array} payload
   */
  decode(pts, payload) {
    if (!this.decoder) this.configure(this.header);
    const decoder = /** @type {AudioDecoder} */ (this.decoder); // configure() made one
    if (decoder.decodeQueueSize > MAX_DECODE_QUEUE) return;
    this.inflight.push(pts);
    if (this.inflight.length > MAX_DECODE_QUEUE * 2) this.inflight.shift();
    decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp: pts, data: payload }));
  }

  /**
   * @private Chromium stamps decoded audio by counting samples from the first chunk, so after
   * any gap in the input its timestamps drift from the source's pts. Opus decodes one chunk to
   * one AudioData: take the pts of the chunk it came from instead.
   * @param {AudioData} data
   */
  output(data) {
    const pts = this.inflight.shift() ?? data.timestamp;
    try {
      const channels = [];
      for (let ch = 0; ch < data.numberOfChannels; ch++) {
        const plane = new Float32Array(data.numberOfFrames);
        data.copyTo(plane, { planeIndex: ch, format: 'f32-planar' });
        channels.push(plane);
      }
      this.onPcm({ pts, sampleRate: data.sampleRate, channels });
    } finally {
      data.close();
    }
  }

  close() {
    if (this.decoder && this.decoder.state !== 'closed') this.decoder.close();
    this.decoder = null;
  }
}

/** @type {Promise<OpusDecoderModule>|null} */
let wasmModule = null;

/** The global object as the vendored UMD script leaves it. */
const umdGlobal = /** @type {{'opus-decoder'?: OpusDecoderModule}} */ (/** @type {unknown} */ (globalThis));

/**
 * Loads the vendored WebAssembly Opus decoder once (a classic UMD script that defines
 * `globalThis["opus-decoder"]`).
 * @returns {Promise<OpusDecoderModule>}
 */
export function loadWasmOpus() {
  wasmModule ??= new Promise((resolve, reject) => {
    if (umdGlobal['opus-decoder']) return resolve(umdGlobal['opus-decoder']);
    const script = document.createElement('script');
    script.src = new URL(WASM_SCRIPT, document.baseURI).href;
    script.charset = 'utf-8';
    /** @param {string} why */
    const fail = (why) => {
      wasmModule = null;
      reject(new Error(`${why} (run tests/browser/vendor.sh)`));
    };
    script.onload = () => {
      // A script that runs but defines nothing (a wrong file) must fail here, not later.
      const module = umdGlobal['opus-decoder'];
      if (module) resolve(module);
      else fail(`${WASM_SCRIPT} defines no "opus-decoder"`);
    };
    script.onerror = () => fail(`cannot load ${WASM_SCRIPT}`);
    document.head.append(script);
  });
  return wasmModule;
}

/** Opus through libopus compiled to WebAssembly (opus-decoder, MIT), for browsers without it. */
export class WasmOpusDecoder {
  /**
   * @param {{codec: string, channels?: number}} track
   * @param {(pcm: Pcm) => void} onPcm
   * @param {(err: Error) => void} onError
   */
  constructor(track, onPcm, onError) {
    if (track.codec !== 'opus') throw new Error(`the WASM decoder plays Opus only, not ${track.codec}`);
    this.name = 'WASM';
    this.track = track;
    this.onPcm = onPcm;
    this.onError = onError;
    /** @type {import('opus-decoder').OpusDecoder|null} */
    this.decoder = null;
    this.ready = false;
    /** @type {Array<[number, Uint8Array]>} frames that arrived while WebAssembly compiled */
    this.pending = [];
    this.generation = 0;
  }

  /** @param {Uint8Array|null} header */
  configure(header) {
    this.close();
    const generation = ++this.generation;
    const head = header ? parseOpusHead(header) : null;
    const channels = head?.channels ?? this.track.channels ?? 2;
    loadWasmOpus()
      .then(async ({ OpusDecoder }) => {
        const decoder = new OpusDecoder({
          channels,
          preSkip: head?.preSkip ?? 0,
          streamCount: head?.streamCount ?? 1,
          coupledStreamCount: head?.coupledStreamCount ?? (channels > 1 ? 1 : 0),
          channelMappingTable: head?.channelMapping ?? (channels > 1 ? [0, 1] : [0]),
        });
        await decoder.ready;
        if (generation !== this.generation) return decoder.free();
        this.decoder = decoder;
        this.ready = true;
        const queued = this.pending.splice(0);
        for (const [pts, payload] of queued) this.decode(pts, payload);
      })
      .catch((err) => this.onError(err));
  }

  /**
   * @param {number} pts microseconds
   * @param {Uint8Array} payload
   */
  decode(pts, payload) {
    if (!this.ready || !this.decoder) {
      if (this.pending.length < MAX_DECODE_QUEUE) this.pending.push([pts, payload.slice()]);
      if (!this.generation) this.configure(null);
      return;
    }
    const { channelData, samplesDecoded, sampleRate } = this.decoder.decodeFrame(payload);
    if (!samplesDecoded) return;
    // Copy out: the library may reuse its output buffers, and we transfer these to the worklet.
    const channels = channelData.map((c) => new Float32Array(c.subarray(0, samplesDecoded)));
    this.onPcm({ pts, sampleRate, channels });
  }

  close() {
    this.generation++;
    this.ready = false;
    this.decoder?.free();
    this.decoder = null;
  }
}
