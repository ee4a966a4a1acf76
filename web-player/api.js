// @ts-check
// The relay's HTTP API as the pages use it, plus small formatting helpers they share.

/**
 * One entry of `GET /api/streams`. A private stream (it needs a signed link) is listed with
 * `name`, `live` and `private` only: the relay tells nobody what it plays or to how many.
 * @typedef {{name: string, live: boolean, private: boolean, source?: 'live'|'autodj'|null,
 *   tracks?: import('./protocol.js').Track[], listeners?: number, hls_listeners?: number,
 *   bitrate_bps?: number, frames_in?: number, frames_out?: number, frames_skipped?: number,
 *   bytes_in?: number, bytes_out?: number, uptime_s?: number,
 *   metadata?: import('./protocol.js').Metadata|null, recorded?: boolean}} StreamInfo
 */

/**
 * One recorded show (or part of one) of `GET /api/recordings/{stream}`.
 * @typedef {{id: string, started: string, duration_s: number|null, bytes: number,
 *   titles: Array<{offset_s: number, at: string, title: string}>, url: string,
 *   content_type: string, state: 'recording'|'complete'|'interrupted',
 *   source: string|null, show: string|null, part: number|null}} Recording
 */

/**
 * Everyone listening to a stream: WebSocket and HTTP listeners, and HLS sessions.
 * @param {StreamInfo} info
 * @returns {number}
 */
export function audience(info) {
  return (info.listeners ?? 0) + (info.hls_listeners ?? 0);
}

/**
 * Fetches the relay's stream list.
 * @returns {Promise<StreamInfo[]>}
 * @throws {Error} when the relay cannot be reached or answers with an error
 */
export async function fetchStreams() {
  const res = await fetch('api/streams', { cache: 'no-store' });
  if (!res.ok) throw new Error(`the relay answered ${res.status}`);
  const body = await res.json();
  return Array.isArray(body.streams) ? body.streams : [];
}

/**
 * Fetches a stream's recordings, newest first.
 * @param {string} stream
 * @param {{expires: string, sig: string}|null} access a private stream's signed link
 * @returns {Promise<Recording[]>}
 * @throws {Error} when the relay cannot be reached or refuses
 */
export async function fetchRecordings(stream, access) {
  const query = access ? `?${new URLSearchParams(access)}` : '';
  const res = await fetch(`api/recordings/${encodeURIComponent(stream)}${query}`, { cache: 'no-store' });
  if (!res.ok) throw new Error(`the relay answered ${res.status}`);
  const body = await res.json();
  return Array.isArray(body.recordings) ? body.recordings : [];
}

/**
 * "1:02:03" or "4:05" for a number of seconds.
 * @param {number} seconds
 * @returns {string}
 */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/**
 * The message of something thrown: an Error's (a DOMException is one), else its text.
 * @param {unknown} err
 * @returns {string}
 */
export function errorMessage(err) {
  return err instanceof Error ? err.message : String(err);
}

/**
 * "128 kbit/s", "1.2 Mbit/s".
 * @param {number} bps
 * @returns {string}
 */
export function formatBitrate(bps) {
  if (!Number.isFinite(bps) || bps <= 0) return '–';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bps / 1000)} kbit/s`;
}

/**
 * A WebSocket URL on this page's host, e.g. `wsUrl('/listen/radio')`.
 * @param {string} path absolute path on the relay
 * @returns {string}
 */
export function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

/**
 * Sets a level bar (an element with role="meter" wrapping a bar element) from a 0..1 peak, on
 * a dB scale so quiet speech still moves it.
 * @param {HTMLElement} meter
 * @param {number} peak
 */
export function showLevel(meter, peak) {
  const db = 20 * Math.log10(Math.max(peak, 1e-5));
  const fill = Math.max(0, Math.min(1, (db + 60) / 60));
  meter.style.setProperty('--level', fill.toFixed(3));
  meter.setAttribute('aria-valuenow', String(Math.round(fill * 100)));
  meter.classList.toggle('hot', db > -3);
}
