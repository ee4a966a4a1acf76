// Browser APIs the web player uses that TypeScript's DOM lib does not declare.

/**
 * Chromium's MediaStreamTrackProcessor on the window thread (the spec exposes it in workers
 * only, so lib.dom has none). Firefox and Safari lack it: hence `| undefined`.
 */
interface MediaStreamTrackProcessorInit {
  track: MediaStreamTrack;
  maxBufferSize?: number;
}
interface MediaStreamTrackProcessor {
  /** AudioData for an audio track, VideoFrame for a video track. */
  readonly readable: ReadableStream<AudioData | VideoFrame>;
}
declare var MediaStreamTrackProcessor:
  | { prototype: MediaStreamTrackProcessor; new (init: MediaStreamTrackProcessorInit): MediaStreamTrackProcessor }
  | undefined;

/** The page's engine, for the browser tests and curious users' consoles (ui.js, broadcast-ui.js). */
declare var onair:
  | {
      player?: import('../../../web-player/player.js').Player | import('../../../web-player/hls-player.js').HlsPlayer;
      broadcaster?: import('../../../web-player/broadcast.js').Broadcaster;
    }
  | undefined;
