// @ts-check
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
    const readable = /** @type {ReadableStream<AudioData>} */ (new MediaStreamTrackProcessor({ track }).readable);
    return pump(readable, onData);
  }
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule(new URL('capture-worklet.js', import.meta.url));
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const node = new AudioWorkletNode(ctx, 'onair-capture', { numberOfOutputs: 0 });
  let frames = 0;
  /** @param {MessageEvent<Float32Array[]>} ev one plane per channel (capture-worklet.js) */
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
 * @param {HTMLVideoElement|null} preview a playing element showing the track, sampled by the
 *   fallback; without one the fallback plays the track in a hidden element of its own
 * @param {boolean} [fallback] sample a <video> even where MediaStreamTrackProcessor exists
 * @returns {Promise<() => void>} stop
 */
export async function captureVideo(track, onFrame, preview, fallback = false) {
  if (!fallback && typeof MediaStreamTrackProcessor !== 'undefined') {
    const readable = /** @type {ReadableStream<VideoFrame>} */ (new MediaStreamTrackProcessor({ track }).readable);
    return pump(readable, onFrame);
  }
  const video = preview ?? (await playHidden(track));
  const t0 = performance.now();
  const timer = setInterval(() => {
    if (video.readyState < 2) return;
    onFrame(new VideoFrame(video, { timestamp: Math.round((performance.now() - t0) * 1000) }));
  }, 1000 / FALLBACK_FPS);
  return () => {
    clearInterval(timer);
    if (video !== preview) video.srcObject = null;
  };
}

/**
 * A muted <video> (so it may autoplay), never shown, playing `track`.
 * @param {MediaStreamTrack} track
 * @returns {Promise<HTMLVideoElement>}
 */
async function playHidden(track) {
  const video = document.createElement('video');
  video.muted = true;
  video.srcObject = new MediaStream([track]);
  await video.play();
  return video;
}

/**
 * Reads a stream of media objects into a callback until cancelled.
 * @template {AudioData|VideoFrame} T
 * @param {ReadableStream<T>} readable
 * @param {(item: T) => void} onItem
 * @returns {() => void} stop
 */
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
