// @ts-check
// Video for the player: WebCodecs `VideoDecoder` into a <canvas>, starting at a keyframe, each
// picture shown when the audio being heard reaches its pts (or at once for video-only streams).

import { webCodecsName } from './protocol.js';

const MAX_QUEUED_FRAMES = 30; // decoded pictures waiting for their time; older ones are dropped
const MAX_DECODE_QUEUE = 30;
const EARLY_US = 10_000; // show a picture up to 10 ms before its time (half a frame at 50 fps)

/**
 * A decoded picture waiting for its time, and the timeline it belongs to.
 * @typedef {{frame: VideoFrame, segment: number}} QueuedPicture
 */

/** Decodes one video track and paints it in sync with a clock. */
export class VideoRenderer {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{codec: string, width?: number, height?: number}} track
   * @param {(err: Error) => void} onError
   */
  constructor(canvas, track, onError) {
    const codec = webCodecsName(track.codec);
    if (!codec) throw new Error(`WebCodecs has no codec string for ${track.codec}`);
    this.canvas = canvas;
    // Null only if the canvas already has another kind of context; the player's has none.
    this.ctx2d = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d', { alpha: false }));
    this.codec = codec;
    this.track = track;
    this.onError = onError;
    /** @type {Uint8Array|null} */
    this.header = null;
    this.needKey = true;
    /** @type {VideoDecoder|null} */
    this.decoder = null;
    /** @type {QueuedPicture[]} */
    this.queue = [];
    this.segment = 0;
    this.decoded = 0;
    this.drawn = 0;
    this.dropped = 0;
  }

  /**
   * Whether this browser can decode the track at all.
   * @param {{codec: string}} track
   * @returns {boolean}
   */
  static supported(track) {
    return typeof VideoDecoder !== 'undefined' && webCodecsName(track.codec) !== null;
  }

  /** @param {Uint8Array|null} header codec configuration (e.g. an avcC), if the source sent one */
  configure(header) {
    this.header = header?.length ? header.slice() : null;
    this.reset();
  }

  /** Forget decoder state; the next picture decoded will be a keyframe. */
  reset() {
    if (this.decoder && this.decoder.state !== 'closed') this.decoder.close();
    this.decoder = null;
    this.needKey = true;
  }

  /**
   * @param {{keyframe: boolean, pts: number, payload: Uint8Array}} frame
   * @param {number} segment timeline the frame belongs to (bumped on each source change)
   */
  decode(frame, segment) {
    if (this.needKey && !frame.keyframe) return;
    this.segment = segment;
    const decoder = this.decoder ?? this.open();
    if (decoder.decodeQueueSize > MAX_DECODE_QUEUE) {
      this.reset(); // hopelessly behind: restart at the next keyframe
      return;
    }
    this.needKey = false;
    decoder.decode(
      new EncodedVideoChunk({ type: frame.keyframe ? 'key' : 'delta', timestamp: frame.pts, data: frame.payload }),
    );
  }

  /**
   * @private
   * @returns {VideoDecoder}
   */
  open() {
    const decoder = new VideoDecoder({
      output: (frame) => {
        this.decoded++;
        this.queue.push({ frame, segment: this.segment });
        while (this.queue.length > MAX_QUEUED_FRAMES) {
          this.queue.shift()?.frame.close();
          this.dropped++;
        }
      },
      error: (err) => {
        this.decoder = null;
        this.needKey = true;
        this.onError(err);
      },
    });
    /** @type {VideoDecoderConfig} */
    const config = { codec: this.codec, optimizeForLatency: true };
    if (this.track.width && this.track.height) {
      config.codedWidth = this.track.width;
      config.codedHeight = this.track.height;
    }
    if (this.header) config.description = this.header;
    decoder.configure(config);
    this.decoder = decoder;
    return decoder;
  }

  /**
   * Paints the newest picture that is due. Call once per animation frame.
   * @param {{pts: number, segment: number}|null} clock what is being heard now; null to show
   *   pictures as soon as they are decoded (no audio track, or audio not started)
   */
  render(clock) {
    let due = -1;
    for (let i = 0; i < this.queue.length; i++) {
      const { frame, segment } = this.queue[i];
      if (!clock || segment < clock.segment || (segment === clock.segment && frame.timestamp <= clock.pts + EARLY_US)) due = i;
      else break;
    }
    if (due < 0) return;
    const stale = this.queue.splice(0, due + 1);
    const { frame } = /** @type {QueuedPicture} */ (stale.pop()); // due >= 0: one at least
    for (const s of stale) {
      s.frame.close();
      this.dropped++;
    }
    if (this.canvas.width !== frame.displayWidth || this.canvas.height !== frame.displayHeight) {
      this.canvas.width = frame.displayWidth;
      this.canvas.height = frame.displayHeight;
    }
    this.ctx2d.drawImage(frame, 0, 0);
    frame.close();
    this.drawn++;
  }

  close() {
    this.reset();
    for (const { frame } of this.queue.splice(0)) frame.close();
  }
}
