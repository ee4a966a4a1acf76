// Raw media from getUserMedia tracks as WebCodecs objects: `AudioData` and `VideoFrame`.
// Uses MediaStreamTrackProcessor where the window has it (Chromium); otherwise an AudioWorklet
// for sound and a <video> element sampled on a timer for pictures (Firefox, Safari).

const FALLBACK_FPS = 25;

/**
 * Calls `onData` with each chunk of captured audio until the returned stop function is called.
 * The callee owns each AudioData and must close it.
 * @param {MediaStreamTrack} track
 * @param {(data: AudioData) => void} onData
 * @param {boolean} [fallback] use the AudioWorklet path even where MediaStreamTrackProcessor exists
 * @returns {Promise<() => void>} stop
 */
export async function captureAudio(track, onData, fallback = false) {
  if (!fallback && typeof MediaStreamTrackProcessor !== 'undefined') {
    return pump(new MediaStreamTrackProcessor({ track }).readable, onData);
  }
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule(new URL('capture-worklet.js', import.meta.url));
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const node = new AudioWorkletNode(ctx, 'onair-capture', { numberOfOutputs: 0 });
  let frames = 0;
  node.port.onmessage = ({ data: planes }) => {
    const length = planes[0].length;
    const data = new Float32Array(length * planes.length);
    planes.forEach((p, i) => data.set(p, i * length));
    onData(new AudioData({
      format: 'f32-planar',
      sampleRate: ctx.sampleRate,
      numberOfFrames: length,
      numberOfChannels: planes.length,
      timestamp: Math.round((frames / ctx.sampleRate) * 1e6),
      data,
    }));
    frames += length;
  };
  source.connect(node);
  return () => {
    source.disconnect();
    node.port.onmessage = null;
    ctx.close();
  };
}

/**
 * Calls `onFrame` with each captured picture until the returned stop function is called.
 * The callee owns each VideoFrame and must close it at once (capture stalls otherwise).
 * @param {MediaStreamTrack} track
 * @param {(frame: VideoFrame) => void} onFrame
 * @param {HTMLVideoElement} preview a playing element showing the track (used by the fallback)
 * @param {boolean} [fallback] sample `preview` even where MediaStreamTrackProcessor exists
 * @returns {Promise<() => void>} stop
 */
export async function captureVideo(track, onFrame, preview, fallback = false) {
  if (!fallback && typeof MediaStreamTrackProcessor !== 'undefined') {
    return pump(new MediaStreamTrackProcessor({ track }).readable, onFrame);
  }
  const t0 = performance.now();
  const timer = setInterval(() => {
    if (preview.readyState < 2) return;
    onFrame(new VideoFrame(preview, { timestamp: Math.round((performance.now() - t0) * 1000) }));
  }, 1000 / FALLBACK_FPS);
  return () => clearInterval(timer);
}

/** Reads a stream of media objects into a callback until cancelled. */
function pump(readable, onItem) {
  const reader = readable.getReader();
  let stopped = false;
  (async () => {
    while (!stopped) {
      const { value, done } = await reader.read();
      if (done) break;
      if (stopped) value.close();
      else onItem(value);
    }
  })().catch(() => {}); // the track ended or the reader was cancelled: nothing more to deliver
  return () => {
    stopped = true;
    reader.cancel().catch(() => {});
  };
}
