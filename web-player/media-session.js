// @ts-check
// The Media Session (lock screen, notification shade, hardware media keys): what is playing
// and whether it plays. Both players (WebSocket and HLS) report here; ui.js sets the actions.

import { displayTitle } from './protocol.js';

/**
 * Shows `meta` as what `stream` is playing: the now-playing title (artist and title joined as
 * the page shows them), the stream's name as the artist, the station icon as artwork.
 * @param {string} stream
 * @param {import('./protocol.js').Metadata|null} meta
 */
export function showNowPlaying(stream, meta) {
  if (!('mediaSession' in navigator) || typeof MediaMetadata === 'undefined') return;
  navigator.mediaSession.metadata = new MediaMetadata({
    title: displayTitle(meta) || stream,
    artist: stream,
    album: meta?.album ?? '',
    artwork: [{ src: new URL('icon.svg', document.baseURI).href, sizes: 'any', type: 'image/svg+xml' }],
  });
}

/**
 * Tells the Media Session whether sound is playing (its play/pause button follows).
 * @param {'playing'|'paused'|'none'} state
 */
export function showPlaybackState(state) {
  if ('mediaSession' in navigator) navigator.mediaSession.playbackState = state;
}
