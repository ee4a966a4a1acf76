// @ts-check
// HLS mode: one stream's playlist (`/{stream}.m3u8`, docs/PROTOCOL.md#hls) through an <audio>
// element, natively where the browser plays HLS itself (iOS, iPadOS), else through hls.js's
// light build (vendor/, Media Source Extensions), loaded on first use. No Web Audio on this
// path: iOS suspends a page's AudioContext in the background and on the lock screen, not its
// media element. Now playing comes from the stream list ui.js polls (`/api/streams`): a native
// player does not hand EXT-X-DATERANGE to scripts.

import { errorMessage } from './api.js';
import { displayTitle } from './protocol.js';
import { showNowPlaying, showPlaybackState } from './media-session.js';

const HLS_SCRIPT = 'vendor/hls.light.min.mjs';
/** No sound this long after play(): HLS counts as failed (a stuck native player says nothing). */
const START_TIMEOUT_MS = 15_000;
/** Recoveries of hls.js from a fatal error once sound has played, before giving up. */
const MAX_RECOVERIES = 3;

/** @typedef {typeof import('hls.js').default} HlsClass */

/** @type {Promise<HlsClass>|null} */
let hlsModule = null;

/**
 * Loads the vendored hls.js once.
 * @returns {Promise<HlsClass>}
 * @throws {Error} when vendor/ lacks it (run tests/browser/vendor.sh)
 */
export function loadHlsJs() {
  hlsModule ??= import(new URL(HLS_SCRIPT, import.meta.url).href).then(
    (module) => {
      const Hls = /** @type {HlsClass|undefined} */ (module.default);
      if (typeof Hls?.isSupported !== 'function') throw new Error(`${HLS_SCRIPT} exports no hls.js`);
      return Hls;
    },
    (err) => {
      throw new Error(`cannot load ${HLS_SCRIPT}: ${errorMessage(err)} (run tests/browser/vendor.sh)`);
    },
  ).catch((err) => {
    hlsModule = null; // a later play may find it
    throw err;
  });
  return hlsModule;
}

/** Whether this is an iPhone, iPod or iPad (iPadOS Safari says it is a Mac with a touch screen). */
export function isAppleMobile() {
  return /iPad|iPhone|iPod/.test(navigator.userAgent) || (/Macintosh/.test(navigator.userAgent) && navigator.maxTouchPoints > 1);
}

/**
 * The way to play: `?mode=hls` or `?mode=websocket` when the page says so (`?decoder=` asks for
 * the WebSocket player's decoder, so for that player); else HLS without WebCodecs and on iOS
 * (it plays on in the background), else the WebSocket player (lower latency).
 * @param {URLSearchParams} params the page's
 * @returns {{mode: 'hls'|'websocket', reason: string}}
 */
export function chooseMode(params) {
  const asked = params.get('mode');
  if (asked === 'hls') return { mode: 'hls', reason: 'asked for by ?mode=hls' };
  if (asked === 'websocket' || asked === 'ws' || params.has('decoder')) return { mode: 'websocket', reason: 'asked for' };
  if (typeof AudioDecoder === 'undefined') return { mode: 'hls', reason: 'this browser has no WebCodecs' };
  if (isAppleMobile()) return { mode: 'hls', reason: 'iOS: HLS plays on in the background' };
  return { mode: 'websocket', reason: '' };
}

/**
 * What HLS mode adds to the player's status.
 * @typedef {{engine: ''|'native'|'hls.js', currentTime: number, playing: boolean, url: string}} HlsState
 */

/** Plays one stream over HLS. Create it and call play() inside a user gesture. */
export class HlsPlayer {
  /**
   * @param {{stream: string, access?: {expires: string, sig: string}|null,
   *   onChange?: (p: HlsPlayer) => void, onFail?: (reason: string) => void}} opts
   *   `onFail` is called once, when HLS cannot play here (the page then tries the other mode)
   */
  constructor({ stream, access = null, onChange = () => {}, onFail = () => {} }) {
    /** @type {'hls'} */
    this.mode = 'hls';
    this.stream = stream;
    this.onChange = onChange;
    this.onFail = onFail;
    const query = access ? `?${new URLSearchParams(access)}` : '';
    this.url = new URL(`${encodeURIComponent(stream)}.m3u8${query}`, document.baseURI).href;
    /** @type {HTMLAudioElement|null} */
    this.element = null;
    /** @type {import('hls.js').default|null} */
    this.hls = null;
    /** @type {HlsState['engine']} */
    this.engine = '';
    /** @type {import('./socket.js').SocketState} */
    this.connection = 'stopped';
    this.live = false;
    this.playing = false;
    this.started = false;
    this.failed = false;
    this.recoveries = 0;
    /** @type {import('./protocol.js').Metadata|null} */
    this.nowPlaying = null;
    this.shownTitle = '';
    this.message = '';
    this.volume = 1;
    this.startTimer = 0;
    /** @type {number[]} */
    this.titleTimers = [];
    this.counters = { errors: 0, stalls: 0, recoveries: 0 };
  }

  /** Starts the element and the playlist. Call from a click: play() must come from the gesture. */
  async play() {
    if (this.element) return;
    const audio = new Audio();
    this.element = audio;
    audio.volume = this.volume;
    audio.addEventListener('playing', () => this.onPlaying());
    audio.addEventListener('waiting', () => {
      this.playing = false;
      this.counters.stalls++;
      this.changed();
    });
    audio.addEventListener('error', () => {
      // With hls.js the element's errors come to its ERROR event too, with more detail.
      if (this.engine === 'native') this.fail(`media error ${audio.error?.code ?? ''} ${audio.error?.message ?? ''}`.trim());
    });
    this.connection = 'connecting';
    this.setMessage('loading the HLS playlist');
    showNowPlaying(this.stream, this.nowPlaying);
    this.startTimer = window.setTimeout(() => this.fail(`no sound ${START_TIMEOUT_MS / 1000} s after start`), START_TIMEOUT_MS);
    const hasMse = typeof MediaSource !== 'undefined' || 'ManagedMediaSource' in globalThis;
    if (audio.canPlayType('application/vnd.apple.mpegurl') && (isAppleMobile() || !hasMse)) {
      this.engine = 'native';
      audio.src = this.url;
      audio.play().catch((err) => this.onPlayRefused(err));
      return;
    }
    // Called within the gesture so that the element may play once hls.js has given it a source.
    audio.play().catch(() => {});
    this.engine = 'hls.js';
    const Hls = await loadHlsJs();
    if (this.element !== audio) return; // stopped meanwhile
    if (!Hls.isSupported()) throw new Error('this browser plays neither HLS nor Media Source Extensions');
    // No metadata cues: titles come from /api/streams, and hls.js would add a <track> with a
    // data: URL for them, which the page's Content-Security-Policy (media-src) refuses.
    const hls = new Hls({
      lowLatencyMode: true,
      backBufferLength: 30,
      enableDateRangeMetadataCues: false,
      enableEmsgMetadataCues: false,
      enableID3MetadataCues: false,
    });
    this.hls = hls;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      const status = data.response?.code ? ` (HTTP ${data.response.code})` : '';
      const what = `${data.details}${status}`;
      // Once it has played, a fatal error is more likely a network blip than HLS not working.
      if (this.started && this.recoveries < MAX_RECOVERIES) {
        this.recoveries++;
        this.counters.recoveries++;
        this.setMessage(`HLS ${what}; recovering`);
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
        else hls.startLoad();
        return;
      }
      this.fail(what);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => audio.play().catch((err) => this.onPlayRefused(err)));
    hls.loadSource(this.url);
    hls.attachMedia(audio);
  }

  /** Stops playback and lets go of the element. */
  async stop() {
    clearTimeout(this.startTimer);
    this.titleTimers.forEach((t) => clearTimeout(t));
    this.titleTimers = [];
    this.hls?.destroy();
    this.hls = null;
    const audio = this.element;
    this.element = null;
    if (audio) {
      audio.pause();
      audio.removeAttribute('src');
      audio.load();
    }
    this.playing = false;
    this.connection = 'stopped';
    this.setMessage('stopped');
  }

  /** @param {number} volume 0..1 (iOS ignores it: the device's buttons set the volume) */
  setVolume(volume) {
    this.volume = volume;
    if (this.element) this.element.volume = volume;
  }

  /** The output level is not measured in HLS mode (no Web Audio on this path). */
  level() {
    return 0;
  }

  /**
   * The stream as the page's poll of `/api/streams` last saw it: whether it is live and its
   * title. A new title is shown once the audio being heard reaches it, that is after about as
   * long as playback is behind live.
   * @param {import('./api.js').StreamInfo} info
   */
  onStreamInfo(info) {
    this.live = info.live;
    const meta = info.metadata ?? null;
    const title = displayTitle(meta);
    if (title === this.shownTitle) return this.changed();
    this.shownTitle = title;
    const show = () => {
      this.nowPlaying = meta;
      showNowPlaying(this.stream, meta);
      this.changed();
    };
    const delay = this.nowPlaying ? this.behindLiveMs() : null;
    if (delay && delay > 0) this.titleTimers.push(window.setTimeout(show, Math.min(delay, 10_000)));
    else show();
  }

  /** @returns {import('./player.js').PlayerStatus} */
  status() {
    const audio = this.element;
    return {
      mode: 'hls',
      connection: this.connection,
      live: this.live,
      decoder: this.engine ? `HLS (${this.engine})` : 'HLS',
      output: 'element',
      nowPlaying: this.nowPlaying,
      behindLiveMs: this.playing ? this.behindLiveMs() : null,
      level: 0,
      message: this.message,
      tracks: [],
      counters: { ...this.counters },
      playback: null,
      newestAudioPts: 0,
      newestDecodedPts: undefined,
      video: null,
      hls: { engine: this.engine, currentTime: audio?.currentTime ?? 0, playing: this.playing, url: this.url },
    };
  }

  /**
   * @private How far behind the relay's clock the audio heard is, from the playlist's
   * EXT-X-PROGRAM-DATE-TIME (hls.js's playingDate; Safari's getStartDate()).
   * @returns {number|null}
   */
  behindLiveMs() {
    const audio = this.element;
    if (!audio) return null;
    let heard = this.hls?.playingDate?.getTime();
    const native = /** @type {{getStartDate?: () => Date}} */ (/** @type {unknown} */ (audio));
    if (heard == null && native.getStartDate) {
      const start = native.getStartDate().getTime();
      if (Number.isFinite(start)) heard = start + audio.currentTime * 1000;
    }
    return heard == null ? null : Math.max(0, Date.now() - heard);
  }

  /** @private */
  onPlaying() {
    clearTimeout(this.startTimer);
    this.started = true;
    this.playing = true;
    this.recoveries = 0;
    this.connection = 'open';
    showPlaybackState('playing');
    if (/^(loading the HLS playlist|HLS .*; recovering)$/.test(this.message)) this.message = '';
    this.changed();
  }

  /**
   * @private The browser refused to start the element: without a user gesture that is the
   * autoplay policy, not a reason to leave HLS.
   * @param {unknown} err
   */
  onPlayRefused(err) {
    if (err instanceof DOMException && err.name === 'NotAllowedError') {
      this.setMessage('press play to start (the browser blocked autoplay)');
    } else if (!(err instanceof DOMException && err.name === 'AbortError')) {
      this.fail(errorMessage(err));
    }
  }

  /**
   * @private HLS cannot play here: tell the page once.
   * @param {string} reason
   */
  fail(reason) {
    if (this.failed || !this.element) return;
    this.failed = true;
    clearTimeout(this.startTimer);
    this.counters.errors++;
    console.warn('onair HLS:', reason);
    this.setMessage(`HLS failed: ${reason}`);
    this.onFail(reason);
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
