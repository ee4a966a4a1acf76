// @ts-check
// Listen again: a stream's recorded shows (GET /api/recordings/{stream}) and an <audio>
// element that plays one. The relay serves the files with byte ranges, so the element's own
// controls seek; the show's title changes are listed as chapters that seek too, and the one
// being heard is marked as it plays.

import { errorMessage, fetchRecordings, formatDuration } from './api.js';

/**
 * @typedef {import('./api.js').Recording} Recording
 * @typedef {{list: HTMLElement, note: HTMLElement, deck: HTMLElement, title: HTMLElement,
 *   when: HTMLElement, audio: HTMLAudioElement, chapters: HTMLElement}} RecordingsElements
 */

/** The "Listen again" section of the listener page. */
export class RecordingsPanel {
  /**
   * @param {RecordingsElements} els
   * @param {{onPlay?: () => void}} [opts] `onPlay` runs when a recording starts playing (the
   *   page stops the live player then)
   */
  constructor(els, { onPlay = () => {} } = {}) {
    this.els = els;
    this.onPlay = onPlay;
    this.stream = '';
    /** @type {{expires: string, sig: string}|null} */
    this.access = null;
    /** @type {Recording[]} */
    this.recordings = [];
    /** What the list shows, to redraw only when it changed (a redraw loses the focus). */
    this.shown = '';
    /** @type {Recording|null} */
    this.playing = null;
    this.loading = 0;
    els.audio.addEventListener('play', () => this.onPlay());
    els.audio.addEventListener('timeupdate', () => this.markChapter());
    els.audio.addEventListener('error', () => {
      if (!this.playing) return;
      const err = els.audio.error;
      this.setNote(`Cannot play this recording${err?.message ? `: ${err.message}` : ''}.`);
    });
  }

  /**
   * Shows the recordings of `stream`, or why there are none to show.
   * @param {string} stream
   * @param {{recorded: boolean, private: boolean, access: {expires: string, sig: string}|null}} opts
   */
  async show(stream, { recorded, private: isPrivate, access }) {
    if (stream !== this.stream) {
      this.stream = stream;
      this.recordings = [];
      this.shown = '';
    }
    this.access = access;
    if (!recorded) {
      this.recordings = [];
      this.render();
      this.setNote(stream ? `${stream} is not recorded.` : '');
      return;
    }
    if (isPrivate && !access) {
      this.recordings = [];
      this.render();
      this.setNote('This stream is private: its recordings need a signed link.');
      return;
    }
    const ticket = ++this.loading;
    try {
      const recordings = await fetchRecordings(stream, access);
      if (ticket !== this.loading) return; // another stream was chosen meanwhile
      this.recordings = recordings;
      this.setNote(recordings.length ? '' : 'No recordings yet.');
    } catch (err) {
      if (ticket !== this.loading) return;
      this.setNote(`Cannot load the recordings: ${errorMessage(err)}`);
    }
    this.render();
  }

  /** Pauses the recording being played (the live player is starting). */
  pause() {
    this.els.audio.pause();
  }

  /** @param {string} text */
  setNote(text) {
    this.els.note.textContent = text;
  }

  render() {
    const key = JSON.stringify(this.recordings.map((r) => [r.id, r.state, Math.floor(r.duration_s ?? 0), r.titles.length]));
    if (key === this.shown) return;
    this.shown = key;
    const focused = document.activeElement instanceof HTMLElement ? document.activeElement.dataset.recording : undefined;
    this.els.list.replaceChildren();
    for (const rec of this.recordings) {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'recording';
      button.dataset.recording = rec.id;
      button.setAttribute('aria-pressed', String(this.playing?.id === rec.id));
      const title = showTitle(rec);
      const when = formatDate(rec.started);
      const duration = rec.duration_s != null ? formatDuration(rec.duration_s) : '–';
      const state = rec.state === 'recording' ? 'Recording now' : rec.state === 'interrupted' ? 'Interrupted' : '';
      button.innerHTML = `
        <span class="recording-title"></span>
        <span class="recording-duration"></span>
        <span class="recording-when"></span>`;
      /** @param {string} selector one of the spans just written */
      const part = (selector) => /** @type {HTMLElement} */ (button.querySelector(selector));
      part('.recording-title').textContent = title;
      part('.recording-duration').textContent = duration;
      part('.recording-when').textContent = state ? `${when} · ${state}` : when;
      button.setAttribute('aria-label', `Play recording: ${title}, ${when}, ${duration}${state ? `, ${state.toLowerCase()}` : ''}`);
      button.addEventListener('click', () => this.play(rec));
      li.append(button);
      this.els.list.append(li);
    }
    if (focused) {
      /** @type {HTMLElement|null} */ (this.els.list.querySelector(`[data-recording="${CSS.escape(focused)}"]`))?.focus();
    }
  }

  /**
   * Plays a recording from its start.
   * @param {Recording} rec
   */
  play(rec) {
    this.playing = rec;
    const { audio } = this.els;
    this.els.deck.hidden = false;
    this.els.title.textContent = showTitle(rec);
    const duration = rec.duration_s != null ? ` · ${formatDuration(rec.duration_s)}` : '';
    this.els.when.textContent = `${formatDate(rec.started)}${duration}`;
    audio.setAttribute('aria-label', `Recording: ${showTitle(rec)}, ${formatDate(rec.started)}`);
    audio.src = rec.url;
    this.renderChapters(rec);
    for (const b of this.els.list.querySelectorAll('button.recording')) {
      b.setAttribute('aria-pressed', String(/** @type {HTMLElement} */ (b).dataset.recording === rec.id));
    }
    audio.play().catch((err) => {
      // A newer src (another click) interrupts this play(): that is not an error to show.
      if (err instanceof DOMException && err.name === 'AbortError') return;
      this.setNote(`Cannot play this recording: ${errorMessage(err)}`);
    });
  }

  /** @param {Recording} rec */
  renderChapters(rec) {
    this.els.chapters.replaceChildren();
    this.els.chapters.hidden = rec.titles.length < 1;
    for (const chapter of rec.titles) {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'chapter';
      button.dataset.offset = String(chapter.offset_s);
      const at = document.createElement('span');
      at.className = 'chapter-at';
      at.textContent = formatDuration(chapter.offset_s);
      const name = document.createElement('span');
      name.textContent = chapter.title;
      button.append(at, name);
      button.setAttribute('aria-label', `Go to ${chapter.title}, at ${formatDuration(chapter.offset_s)}`);
      button.addEventListener('click', () => {
        this.els.audio.currentTime = chapter.offset_s;
        if (this.els.audio.paused) this.els.audio.play().catch(() => {});
      });
      li.append(button);
      this.els.chapters.append(li);
    }
    this.markChapter();
  }

  /** Marks the chapter being heard. */
  markChapter() {
    const t = this.els.audio.currentTime;
    const buttons = [...this.els.chapters.querySelectorAll('button.chapter')];
    let current = -1;
    buttons.forEach((b, i) => {
      if (Number(/** @type {HTMLElement} */ (b).dataset.offset) <= t + 0.25) current = i;
    });
    buttons.forEach((b, i) => b.toggleAttribute('aria-current', i === current));
  }
}

/**
 * The show's first title, or a name made from its date.
 * @param {Recording} rec
 */
function showTitle(rec) {
  const first = rec.titles[0]?.title;
  const part = rec.part && rec.part > 1 ? ` (part ${rec.part})` : '';
  return `${first || 'Untitled show'}${part}`;
}

/** @param {string} iso */
function formatDate(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}
