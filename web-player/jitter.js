// @ts-check
// The adaptive jitter buffer behind the player's AudioWorklet: decoded PCM chunks in, a steady
// stream of output samples out. Pure logic with no Web Audio types, so `node --test` covers it.
//
// Policy: start as soon as `startMs` is buffered; hold about `targetMs`; when the buffer runs
// dry, fade out, raise the target and rebuffer; when it grows past the target, play 1 % fast,
// and when it is more than 120 ms over, cut straight to the target. Cuts, pts jumps and restarts are
// cross-faded so they never click. Resampling (e.g. 48 kHz Opus to a 44.1 kHz device) uses the
// same fractional read position as the catch-up speed.

const FADE_SAMPLES = 240; // 5 ms at 48 kHz: long enough not to click, short enough not to smear
const GAP_US = 30_000; // a pts jump larger than this between chunks is a discontinuity
const MAX_BUFFER_MS = 10_000; // a suspended context must not hoard memory
const CATCH_UP_SPEED = 1.01; // ~17 cents: not noticeable on speech, barely on music
const DECAY_AFTER_MS = 15_000; // lower the target after this long without an underrun

/**
 * A chunk of decoded audio as pushed by the main thread.
 * @typedef {{pts: number, sampleRate: number, channels: Float32Array[], segment?: number}} PcmChunk
 */

/**
 * A chunk in the queue: its length in samples, its segment, and whether it follows a gap.
 * @typedef {PcmChunk & {length: number, gapBefore: boolean, segment: number}} QueuedChunk
 */

/**
 * The buffer's output rate and its policy in milliseconds (defaults in the constructor).
 * @typedef {{outputRate: number, startMs?: number, targetMs?: number, minTargetMs?: number,
 *   maxTargetMs?: number, hardDropMs?: number}} JitterOptions
 */

/**
 * What `stats()` reports; the worklet posts it to the page.
 * @typedef {{state: string, bufferedMs: number, targetMs: number, underruns: number,
 *   droppedMs: number, speed: number, playingPts: number, segment: number, playedSamples: number}} JitterStats
 */

/** Adaptive jitter buffer with fractional-rate reading. */
export class JitterBuffer {
  /** @param {JitterOptions} opts */
  constructor({ outputRate, startMs = 40, targetMs = 100, minTargetMs = 60, maxTargetMs = 1000, hardDropMs = 120 }) {
    this.outputRate = outputRate;
    this.startMs = startMs;
    this.targetMs = targetMs;
    this.minTargetMs = minTargetMs;
    this.maxTargetMs = maxTargetMs;
    this.hardDropMs = hardDropMs;
    /** @type {QueuedChunk[]} */
    this.queue = [];
    this.pos = 0; // fractional read position in queue[0], in its samples
    this.state = 'buffering';
    this.started = false;
    this.speed = 1;
    this.sinceResume = 0; // output samples since the last restart/gap, for the fade-in
    this.stableMs = 0;
    this.underruns = 0;
    this.droppedMs = 0;
    this.playedSamples = 0;
    this.last = [0, 0]; // last output sample per channel, for the underrun fade-out
    this.playing = { pts: 0, segment: 0 };
    /** @type {QueuedChunk|null} */
    this.lastPushed = null;
  }

  /**
   * Adds decoded audio. Marks a discontinuity when its pts does not follow the previous chunk
   * or its segment (a new source timeline) differs.
   * @param {PcmChunk} chunk
   */
  push(chunk) {
    const length = chunk.channels[0]?.length ?? 0;
    if (!length) return;
    const segment = chunk.segment ?? 0;
    let gapBefore = false;
    const prev = this.lastPushed;
    if (prev) {
      const expected = prev.pts + (prev.length / prev.sampleRate) * 1e6;
      gapBefore = prev.segment !== segment || Math.abs(chunk.pts - expected) > GAP_US;
    }
    const entry = { ...chunk, segment, length, gapBefore };
    this.queue.push(entry);
    this.lastPushed = entry;
    while (this.bufferedMs() > MAX_BUFFER_MS && this.queue.length > 1) this.dropHead();
  }

  /** Drops everything buffered (e.g. on stop). */
  clear() {
    this.queue = [];
    this.pos = 0;
    this.lastPushed = null;
    this.state = 'buffering';
    this.started = false;
  }

  /** Milliseconds of audio waiting to be played. */
  bufferedMs() {
    let ms = 0;
    for (let i = 0; i < this.queue.length; i++) {
      const c = this.queue[i];
      ms += ((i === 0 ? c.length - this.pos : c.length) / c.sampleRate) * 1000;
    }
    return ms;
  }

  /**
   * Fills `outs` (one Float32Array per output channel) with `frames` samples.
   * @param {Float32Array[]} outs
   * @param {number} frames
   */
  read(outs, frames) {
    this.adapt(frames);
    let i = 0;
    if (this.state === 'playing') i = this.render(outs, 0, frames);
    if (i < frames) this.fadeTail(outs, i, frames);
  }

  /**
   * @private Decide speed, cuts and state once per block.
   * @param {number} frames
   */
  adapt(frames) {
    const buffered = this.bufferedMs();
    if (this.state === 'buffering') {
      if (buffered >= (this.started ? this.targetMs : this.startMs)) {
        this.state = 'playing';
        this.started = true;
        this.sinceResume = 0;
      } else {
        return;
      }
    }
    const excess = buffered - this.targetMs;
    if (excess > this.hardDropMs) this.cutTo(this.targetMs);
    if (excess > 30) this.speed = CATCH_UP_SPEED;
    else if (excess < 5) this.speed = 1;
    this.stableMs += (frames / this.outputRate) * 1000;
    if (this.stableMs > DECAY_AFTER_MS) {
      this.stableMs = 0;
      this.targetMs = Math.max(this.minTargetMs, this.targetMs - 20);
    }
  }

  /**
   * @private Keep queue[0] (it is playing) and drop whole chunks after it until about `ms`
   * remain; the chunk after the cut is marked as a gap so both sides are faded.
   * @param {number} ms
   */
  cutTo(ms) {
    let buffered = this.bufferedMs();
    let dropped = 0;
    while (this.queue.length > 2) {
      const c = this.queue[1];
      const cms = (c.length / c.sampleRate) * 1000;
      if (buffered - cms < ms) break;
      this.queue.splice(1, 1);
      buffered -= cms;
      dropped += cms;
    }
    if (dropped > 0) {
      this.queue[1].gapBefore = true;
      this.droppedMs += dropped;
    }
  }

  /** @private Drop the chunk being played (only used when hoarding). */
  dropHead() {
    const c = /** @type {QueuedChunk} */ (this.queue.shift()); // only called with 2+ chunks queued
    this.droppedMs += ((c.length - this.pos) / c.sampleRate) * 1000;
    this.pos = 0;
    if (this.queue[0]) this.queue[0].gapBefore = true;
  }

  /**
   * @private Render until `frames` or until the queue runs dry; returns samples written.
   * @param {Float32Array[]} outs
   * @param {number} from
   * @param {number} frames
   * @returns {number}
   */
  render(outs, from, frames) {
    let i = from;
    for (; i < frames; i++) {
      let head = this.queue[0];
      if (!head) break;
      const step = (head.sampleRate / this.outputRate) * this.speed;
      const idx = Math.floor(this.pos);
      const frac = this.pos - idx;
      const next = this.queue[1];
      let gain = Math.min(1, this.sinceResume / FADE_SAMPLES);
      if (next?.gapBefore) gain = Math.min(gain, (head.length - this.pos) / step / FADE_SAMPLES);
      for (let ch = 0; ch < outs.length; ch++) {
        const src = head.channels[Math.min(ch, head.channels.length - 1)];
        const a = src[idx];
        let b = a;
        if (idx + 1 < head.length) b = src[idx + 1];
        else if (next && !next.gapBefore) b = next.channels[Math.min(ch, next.channels.length - 1)][0];
        const v = (a + (b - a) * frac) * gain;
        outs[ch][i] = v;
        this.last[ch] = v;
      }
      this.sinceResume++;
      this.playedSamples++;
      this.playing = { pts: head.pts + (this.pos / head.sampleRate) * 1e6, segment: head.segment };
      this.pos += step;
      while (head && this.pos >= head.length) {
        this.pos -= head.length;
        this.queue.shift();
        head = this.queue[0];
        if (head?.gapBefore) {
          this.sinceResume = 0;
          this.pos = 0;
        }
      }
    }
    if (i < frames && this.state === 'playing') {
      this.state = 'buffering';
      this.underruns++;
      this.stableMs = 0;
      this.targetMs = Math.min(this.maxTargetMs, this.targetMs + 40);
    }
    return i;
  }

  /**
   * @private Ramp the last sample to silence instead of stopping dead (no click).
   * @param {Float32Array[]} outs
   * @param {number} from
   * @param {number} frames
   */
  fadeTail(outs, from, frames) {
    for (let ch = 0; ch < outs.length; ch++) {
      let v = this.last[ch] ?? 0;
      for (let i = from; i < frames; i++) {
        v *= 0.97;
        outs[ch][i] = v;
      }
      this.last[ch] = v;
    }
  }

  /**
   * A snapshot for the UI: state, depth, target and where playback is in the source timeline.
   * @returns {JitterStats}
   */
  stats() {
    return {
      state: this.state,
      bufferedMs: this.bufferedMs(),
      targetMs: this.targetMs,
      underruns: this.underruns,
      droppedMs: this.droppedMs,
      speed: this.speed,
      playingPts: this.playing.pts,
      segment: this.playing.segment,
      playedSamples: this.playedSamples,
    };
  }
}
