// @ts-check
// AudioWorklet processor that hands captured input to the main thread in ~20 ms blocks
// (fallback for browsers without MediaStreamTrackProcessor; see capture.js).

const BLOCK_FRAMES = 1024;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    /** @type {Float32Array[]|null} */
    this.planes = null;
    this.filled = 0;
  }

  /**
   * @param {Float32Array[][]} inputs
   * @returns {boolean}
   */
  process(inputs) {
    const input = inputs[0];
    if (!input?.length) return true;
    if (!this.planes || this.planes.length !== input.length) {
      this.planes = input.map(() => new Float32Array(BLOCK_FRAMES));
      this.filled = 0;
    }
    const planes = this.planes;
    const n = input[0].length;
    input.forEach((ch, i) => planes[i].set(ch, this.filled));
    this.filled += n;
    if (this.filled + n > BLOCK_FRAMES) {
      const out = planes.map((p) => p.slice(0, this.filled));
      this.port.postMessage(out, out.map((p) => p.buffer));
      this.filled = 0;
    }
    return true;
  }
}

registerProcessor('onair-capture', CaptureProcessor);
