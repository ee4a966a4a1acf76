// AudioWorklet processor that plays decoded PCM through the jitter buffer (jitter.js).
// The main thread posts {type:'pcm', pts, sampleRate, segment, channels} (buffers transferred)
// and {type:'clear'}; the processor posts {type:'stats', ...} about 20 times a second so the
// page can show depth and sync now-playing and video to what is heard.

import { JitterBuffer } from './jitter.js';

const STATS_EVERY_BLOCKS = 16; // 128-frame blocks: ~43 ms at 48 kHz

class JitterProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.buffer = new JitterBuffer({ outputRate: sampleRate, ...(options.processorOptions ?? {}) });
    this.blocks = 0;
    this.port.onmessage = ({ data }) => {
      if (data.type === 'pcm') this.buffer.push(data);
      else if (data.type === 'clear') this.buffer.clear();
    };
  }

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
