// @ts-check
// AudioWorklet processor that plays decoded PCM through the jitter buffer (jitter.js).
// The main thread posts {type:'pcm', pts, sampleRate, segment, channels} (buffers transferred)
// and {type:'clear'}; the processor posts {type:'stats', ...} about 20 times a second so the
// page can show depth and sync now-playing and video to what is heard.

import { JitterBuffer } from './jitter.js';

const STATS_EVERY_BLOCKS = 16; // 128-frame blocks: ~43 ms at 48 kHz

/**
 * A message from the main thread.
 * @typedef {({type: 'pcm'} & import('./jitter.js').PcmChunk) | {type: 'clear'}} JitterMessage
 */

class JitterProcessor extends AudioWorkletProcessor {
  /** @param {{processorOptions?: Omit<import('./jitter.js').JitterOptions, 'outputRate'>}} options */
  constructor(options) {
    super();
    this.buffer = new JitterBuffer({ outputRate: sampleRate, ...(options.processorOptions ?? {}) });
    this.blocks = 0;
    /** @param {MessageEvent<JitterMessage>} ev */
    this.port.onmessage = ({ data }) => {
      if (data.type === 'pcm') this.buffer.push(data);
      else if (data.type === 'clear') this.buffer.clear();
    };
  }

  /**
   * @param {Float32Array[][]} _inputs
   * @param {Float32Array[][]} outputs
   * @returns {boolean}
   */
  process(_inputs, outputs) {
    const out = outputs[0];
    this.buffer.read(out, out[0].length);
    if (++this.blocks % STATS_EVERY_BLOCKS === 0) {
      this.port.postMessage({ type: 'stats', time: currentTime, ...this.buffer.stats() });
    }
    return true;
  }
}

registerProcessor('onair-jitter', JitterProcessor);
