// @ts-check
// The presenter page (broadcast.html): the go-live form, the input meter, live figures and
// the now-playing form. `?stream=NAME` fills in the stream name (the key is never stored);
// `?capture=fallback` forces the capture path of browsers without MediaStreamTrackProcessor.

import { Broadcaster } from './broadcast.js';
import { errorMessage, fetchStreams, formatBitrate, showLevel } from './api.js';

const POLL_MS = 2000;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const els = {
  form: /** @type {HTMLFormElement} */ ($('form')),
  stream: /** @type {HTMLInputElement} */ ($('stream')),
  key: /** @type {HTMLInputElement} */ ($('key')),
  bitrate: /** @type {HTMLSelectElement} */ ($('bitrate')),
  camera: /** @type {HTMLInputElement} */ ($('camera')),
  go: /** @type {HTMLButtonElement} */ ($('go')),
  names: /** @type {HTMLDataListElement} */ ($('stream-names')),
  preview: /** @type {HTMLVideoElement} */ ($('preview')),
  badge: $('badge'),
  meter: $('meter'),
  listeners: $('listeners'),
  rate: $('rate'),
  uptime: $('uptime'),
  state: $('state'),
  status: $('status'),
  metaForm: /** @type {HTMLFormElement} */ ($('meta-form')),
  metaTitle: /** @type {HTMLInputElement} */ ($('meta-title')),
  metaArtist: /** @type {HTMLInputElement} */ ($('meta-artist')),
  metaSend: /** @type {HTMLButtonElement} */ ($('meta-send')),
};

const params = new URLSearchParams(location.search);
els.stream.value = params.get('stream') ?? localStorage.getItem('onair.stream') ?? '';

const bc = new Broadcaster({ preview: els.preview, onChange: render });
globalThis.onair = { broadcaster: bc }; // for the browser tests
let liveSince = 0;
/** @type {number|null} */
let listeners = null;

function render() {
  const active = bc.state !== 'stopped';
  const live = bc.state === 'live';
  if (live && !liveSince) liveSince = performance.now();
  if (!live) liveSince = 0;
  els.badge.textContent = live ? 'On air' : active ? 'Connecting' : 'Off air';
  els.badge.classList.toggle('live', live);
  els.badge.classList.toggle('pending', active && !live);
  els.go.textContent = active ? 'Stop' : 'Go live';
  els.go.classList.toggle('stop', active);
  for (const el of [els.stream, els.key, els.bitrate, els.camera]) el.disabled = active;
  els.metaSend.disabled = !live;
  els.state.textContent = { stopped: 'off air', starting: 'starting', connecting: 'connecting', live: 'live', reconnecting: 'reconnecting' }[bc.state];
  els.status.textContent = bc.message;
  els.status.classList.toggle('error', bc.error);
  els.preview.hidden = !(active && els.camera.checked);
  els.listeners.textContent = listeners == null ? '–' : String(listeners);
}

function tick() {
  showLevel(els.meter, bc.level);
  bc.level *= 0.95; // decay between captured chunks so the bar falls when the room is quiet
  els.rate.textContent = bc.state === 'live' ? formatBitrate(bc.bitrate()) : '–';
  els.uptime.textContent = liveSince ? clock((performance.now() - liveSince) / 1000) : '–';
  requestAnimationFrame(tick);
}

/** @param {number} s */
function clock(s) {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

async function poll() {
  try {
    const streams = await fetchStreams();
    if (!els.names.children.length) {
      for (const s of streams) els.names.append(new Option(s.name));
      if (!els.stream.value && streams.length) els.stream.value = streams[0].name;
    }
    const mine = streams.find((s) => s.name === els.stream.value.trim());
    listeners = mine && bc.state !== 'stopped' ? mine.listeners ?? null : null;
  } catch {
    listeners = null;
  }
  render();
}

els.form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (bc.state !== 'stopped') return bc.stop();
  const stream = els.stream.value.trim();
  localStorage.setItem('onair.stream', stream);
  try {
    await bc.start({
      stream,
      key: els.key.value,
      camera: els.camera.checked,
      audioBitrate: Number(els.bitrate.value),
      captureFallback: params.get('capture') === 'fallback',
    });
  } catch (err) {
    bc.message = errorMessage(err);
    bc.error = true;
    render();
  }
});

els.metaForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const meta = {};
  if (els.metaTitle.value.trim()) meta.title = els.metaTitle.value.trim();
  if (els.metaArtist.value.trim()) meta.artist = els.metaArtist.value.trim();
  bc.sendMetadata(meta);
});

render();
poll();
setInterval(poll, POLL_MS);
requestAnimationFrame(tick);
