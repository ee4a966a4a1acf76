// @ts-check
// The listener page (index.html): the stream list, the player deck and its controls.
// URL parameters: `?stream=NAME` picks a stream, `?mode=hls|websocket` the player (default:
// HLS on iOS and without WebCodecs, see hls-player.js), `?decoder=wasm|webcodecs` forces a
// decoder, `&expires=…&sig=…` carries a signed link to a private stream, `?output=element|direct`
// picks the audio path (default: through an <audio> element on touch screens).

import { Player } from './player.js';
import { HlsPlayer, chooseMode } from './hls-player.js';
import { showPlaybackState } from './media-session.js';
import { RecordingsPanel } from './recordings.js';
import { audience, errorMessage, fetchStreams, formatBitrate, showLevel } from './api.js';
import { displayTitle } from './protocol.js';

const REFRESH_MS = 3000;
/** The recordings list changes at most when a show starts, ends or is split. */
const RECORDINGS_REFRESH_MS = 15000;

const params = new URLSearchParams(location.search);
/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const els = {
  station: $('station'),
  badge: $('badge'),
  mode: $('mode'),
  modeNote: $('mode-note'),
  nowPlaying: $('now-playing'),
  artist: $('artist'),
  play: /** @type {HTMLButtonElement} */ ($('play')),
  volume: /** @type {HTMLInputElement} */ ($('volume')),
  meter: $('meter'),
  listeners: $('listeners'),
  latency: $('latency'),
  conn: $('conn'),
  decoder: $('decoder'),
  status: $('status'),
  list: $('stream-list'),
  video: /** @type {HTMLCanvasElement} */ ($('video')),
};

const recordings = new RecordingsPanel({
  list: $('recording-list'),
  note: $('recordings-note'),
  deck: $('replay'),
  title: $('replay-title'),
  when: $('replay-when'),
  audio: /** @type {HTMLAudioElement} */ ($('replay-audio')),
  chapters: $('chapters'),
}, { onPlay: () => { if (player) stop(); } });
let recordingsShownAt = 0;
let recordingsFor = '';

/** @type {import('./api.js').StreamInfo[]} */
let streams = [];
let selected = params.get('stream') ?? '';
/** @type {Player|HlsPlayer|null} */
let player = null;
let listError = '';
/** Why the player playing is not the one first chosen (shown while it plays). */
let modeNote = '';
/** Why playback could not start at all. */
let playError = '';

async function refresh() {
  try {
    streams = await fetchStreams();
    listError = '';
  } catch (err) {
    listError = `Cannot load the stream list: ${errorMessage(err)}`;
  }
  if (!selected || !streams.some((s) => s.name === selected)) {
    selected = (streams.find((s) => s.live) ?? streams[0])?.name ?? selected;
  }
  const info = streams.find((s) => s.name === selected);
  if (info && player instanceof HlsPlayer && player.stream === info.name) player.onStreamInfo(info);
  renderList();
  renderDeck();
  refreshRecordings(false);
}

/**
 * Lists the selected stream's recordings: at once when the stream changed, else every
 * RECORDINGS_REFRESH_MS.
 * @param {boolean} now
 */
function refreshRecordings(now) {
  const info = streams.find((s) => s.name === selected);
  if (!info) return;
  if (!now && info.name === recordingsFor && Date.now() - recordingsShownAt < RECORDINGS_REFRESH_MS) return;
  recordingsFor = info.name;
  recordingsShownAt = Date.now();
  recordings.show(info.name, { recorded: !!info.recorded, private: info.private, access: signedLink() });
}

/** A signed link (`onair sign`) for a private stream: ?stream=NAME&expires=…&sig=… */
function signedLink() {
  const sig = params.get('sig');
  return sig && params.get('stream') === selected ? { expires: params.get('expires') ?? '', sig } : null;
}

function renderList() {
  els.list.replaceChildren();
  if (listError || !streams.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = listError || 'No streams configured on this relay.';
    els.list.append(li);
    return;
  }
  for (const s of streams) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'stream';
    button.setAttribute('aria-pressed', String(s.name === selected));
    const title = displayTitle(s.metadata);
    button.innerHTML = `
      <span class="stream-name"></span>
      <span class="badge ${s.live ? 'live' : ''}">${s.live ? 'Live' : 'Offline'}</span>
      <span class="stream-title"></span>
      <span class="stream-meta"></span>`;
    /** @param {string} selector one of the spans just written */
    const part = (selector) => /** @type {HTMLElement} */ (button.querySelector(selector));
    part('.stream-name').textContent = s.name;
    part('.stream-title').textContent = title || (s.live ? 'Untitled' : 'Nothing on air');
    // A private stream is listed without figures (the relay keeps them to itself).
    const heard = s.private ? 'private' : `${audience(s)} listening`;
    const bitrate = s.bitrate_bps ?? 0;
    part('.stream-meta').textContent = s.live && bitrate > 0 ? `${heard} · ${formatBitrate(bitrate)}` : heard;
    button.setAttribute('aria-label', `${s.name}, ${s.live ? 'live' : 'offline'}${title ? `, ${title}` : ''}, ${heard}. Play`);
    button.addEventListener('click', () => select(s.name, true));
    li.append(button);
    els.list.append(li);
  }
}

function renderDeck() {
  const info = streams.find((s) => s.name === selected);
  const st = player?.status();
  els.station.textContent = selected || 'No stream';
  document.title = selected ? `${selected} · onair` : 'onair';
  const live = st ? st.live : !!info?.live;
  els.badge.textContent = live ? 'On air' : 'Off air';
  els.badge.classList.toggle('live', live);
  els.mode.hidden = st?.mode !== 'hls';
  els.modeNote.hidden = !(player && modeNote);
  els.modeNote.textContent = player ? modeNote : '';
  const meta = st ? st.nowPlaying : info?.metadata;
  els.nowPlaying.textContent = meta?.title || meta?.artist || (live ? 'Untitled' : '—');
  els.artist.textContent = meta?.title && meta?.artist ? meta.artist : '';
  els.listeners.textContent = info?.listeners != null ? String(audience(info)) : '–';
  els.play.disabled = !selected;
  const playing = !!player;
  els.play.setAttribute('aria-label', playing ? 'Stop' : 'Play');
  els.play.classList.toggle('playing', playing);
  els.conn.textContent = st ? connectionText(st) : 'stopped';
  els.decoder.textContent = st?.decoder || (params.get('decoder') === 'wasm' ? 'WASM' : '–');
  els.latency.textContent = st?.behindLiveMs != null ? `${Math.round(st.behindLiveMs)} ms` : '–';
  els.status.textContent = st?.message ?? (playError || listError);
  els.video.hidden = !(st?.video && st.video.drawn > 0);
}

/** @param {import('./player.js').PlayerStatus} st */
function connectionText(st) {
  if (st.connection === 'open') {
    if (st.hls) return st.hls.playing ? 'playing' : 'buffering';
    if (!st.live) return 'waiting for source';
    return st.playback?.state === 'playing' ? 'playing' : 'buffering';
  }
  return { connecting: 'connecting', waiting: 'reconnecting', stopped: 'stopped' }[st.connection] ?? st.connection;
}

/**
 * @param {string} name
 * @param {boolean} autoplay
 */
async function select(name, autoplay) {
  const changed = name !== selected;
  selected = name;
  const url = new URL(location.href);
  url.searchParams.set('stream', name);
  history.replaceState(null, '', url);
  // Not awaited: the new AudioContext must be made inside this click (Safari), and stop()
  // lets go of the old player before its first await.
  if (changed && player) stop();
  renderList();
  renderDeck();
  if (changed) refreshRecordings(true);
  if (autoplay && !player) await start();
}

async function start() {
  if (!selected || player) return;
  modeNote = playError = '';
  await startMode(chooseMode(params).mode, []);
}

/**
 * Starts the player of `mode`. When it cannot play here, the other one takes over with a
 * note; when neither can, the page says why.
 * @param {'hls'|'websocket'} mode
 * @param {string[]} failures why the players tried before could not play
 */
async function startMode(mode, failures) {
  const access = signedLink();
  recordings.pause();
  /** @type {Player|HlsPlayer} */
  let p;
  if (mode === 'hls') {
    const hls = new HlsPlayer({ stream: selected, access, onChange: scheduleRender, onFail: (why) => failOver(hls, why, failures) });
    const info = streams.find((s) => s.name === selected);
    if (info) hls.onStreamInfo(info);
    p = hls;
  } else {
    const decoder = /** @type {'auto'|'wasm'|'webcodecs'} */ (params.get('decoder') ?? 'auto');
    const output = /** @type {'auto'|'element'|'direct'} */ (params.get('output') ?? 'auto');
    p = new Player({ stream: selected, canvas: els.video, decoder, output, onChange: scheduleRender, access });
  }
  player = p;
  p.setVolume(Number(els.volume.value));
  globalThis.onair = { player: p }; // for the browser tests and for curious users' consoles
  showPlaybackState('playing');
  renderDeck();
  try {
    await p.play();
  } catch (err) {
    await failOver(p, errorMessage(err), failures);
  }
}

/**
 * `p` cannot play here: the other player takes over, unless it failed already.
 * @param {Player|HlsPlayer} p
 * @param {string} why
 * @param {string[]} failures
 */
async function failOver(p, why, failures) {
  if (player !== p) return; // stopped or replaced meanwhile
  const name = p.mode === 'hls' ? 'HLS' : 'the WebSocket player';
  console.warn(`onair: ${name} cannot play:`, why);
  await stop();
  const tried = [...failures, `${name}: ${why}`];
  if (tried.length > 1) {
    playError = `Cannot play: ${tried.join('; ')}`;
    renderDeck();
    return;
  }
  modeNote = p.mode === 'hls'
    ? `HLS did not work here: ${why}. Playing over WebSocket instead.`
    : `The WebSocket player did not work here: ${why}. Playing over HLS instead.`;
  await startMode(p.mode === 'hls' ? 'websocket' : 'hls', tried);
}

async function stop() {
  const p = player;
  player = null;
  showPlaybackState('paused');
  renderDeck();
  await p?.stop();
  showLevel(els.meter, 0);
  els.video.hidden = true;
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderDeck();
  });
}

function meterLoop() {
  showLevel(els.meter, player ? player.level() : 0);
  requestAnimationFrame(meterLoop);
}

els.play.addEventListener('click', () => (player ? stop() : start()));
els.volume.addEventListener('input', () => player?.setVolume(Number(els.volume.value)));
document.addEventListener('keydown', (ev) => {
  // Space/K toggle play like media sites, unless a control has the keyboard.
  const control = ev.target instanceof HTMLButtonElement || ev.target instanceof HTMLInputElement || ev.target instanceof HTMLMediaElement;
  if ((ev.key === ' ' || ev.key === 'k') && !control) {
    ev.preventDefault();
    els.play.click();
  }
});
if ('mediaSession' in navigator) {
  navigator.mediaSession.setActionHandler('play', () => start());
  navigator.mediaSession.setActionHandler('pause', () => stop());
  navigator.mediaSession.setActionHandler('stop', () => stop());
}

refresh();
setInterval(refresh, REFRESH_MS);
requestAnimationFrame(meterLoop);
