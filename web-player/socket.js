// @ts-check
// A WebSocket that reconnects with exponential backoff and jitter. The player and the
// broadcaster both use it; they decide per close whether to retry (onClose returns false to
// give up, e.g. after an operator kicked the source).

/**
 * Backoff delay before reconnect attempt `attempt` (0-based): doubles from `minMs` up to
 * `maxMs`, with ±25 % jitter so a relay restart is not met by every listener at once.
 * @param {number} attempt
 * @param {number} minMs
 * @param {number} maxMs
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, minMs, maxMs, random = Math.random) {
  const base = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 20));
  return Math.round(base * (0.75 + 0.5 * random()));
}

/**
 * Where the socket is: connecting, open, waiting to reconnect, or stopped for good.
 * @typedef {'connecting'|'open'|'waiting'|'stopped'} SocketState
 */

/**
 * @typedef {object} SocketHandlers
 * @property {(ws: WebSocket) => void} [onOpen]
 * @property {(data: ArrayBuffer|string) => void} [onMessage]
 * @property {(info: {code: number, reason: string, wasOpen: boolean, retryInMs: number}) => (boolean|void)} [onClose]
 *   called after every close or failed attempt; return false to stop reconnecting
 * @property {(state: SocketState) => void} [onState]
 */

/** A WebSocket that keeps itself connected until `stop()`. */
export class ReconnectingSocket {
  /**
   * @param {() => string} url called before each attempt, so a changed key or stream applies
   * @param {SocketHandlers} handlers
   * @param {{minDelayMs?: number, maxDelayMs?: number, stableMs?: number}} [opts]
   */
  constructor(url, handlers, { minDelayMs = 500, maxDelayMs = 5000, stableMs = 3000 } = {}) {
    this.url = url;
    this.handlers = handlers;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.stableMs = stableMs;
    this.attempt = 0;
    /** @type {WebSocket|null} */
    this.ws = null;
    this.timer = 0;
    this.running = false;
    /** @type {SocketState} */
    this.state = 'stopped';
    this.onOnline = () => this.running && this.state === 'waiting' && this.retryNow();
  }

  /** Connects (again) and keeps reconnecting until `stop()`. */
  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    globalThis.addEventListener?.('online', this.onOnline);
    this.connect();
  }

  /** Closes the socket for good. */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    globalThis.removeEventListener?.('online', this.onOnline);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(1000);
    }
    this.setState('stopped');
  }

  /** Skips the current backoff wait. */
  retryNow() {
    clearTimeout(this.timer);
    if (this.running && !this.ws) this.connect();
  }

  /**
   * Sends if open; returns whether it was sent.
   * @param {string|BufferSource} data
   */
  send(data) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(data);
    return true;
  }

  /** Bytes queued by the browser but not yet sent. */
  get bufferedAmount() {
    return this.ws?.bufferedAmount ?? 0;
  }

  /**
   * @private
   * @param {SocketState} state
   */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.handlers.onState?.(state);
  }

  /** @private */
  connect() {
    this.setState('connecting');
    const ws = new WebSocket(this.url());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let openedAt = 0;
    ws.onopen = () => {
      openedAt = performance.now();
      this.setState('open');
      this.handlers.onOpen?.(ws);
    };
    ws.onmessage = (ev) => this.handlers.onMessage?.(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (openedAt && performance.now() - openedAt >= this.stableMs) this.attempt = 0;
      const retryInMs = backoffDelay(this.attempt++, this.minDelayMs, this.maxDelayMs);
      const again = this.handlers.onClose?.({ code: ev.code, reason: ev.reason, wasOpen: openedAt > 0, retryInMs });
      if (!this.running) return;
      if (again === false) {
        this.running = false;
        this.setState('stopped');
        return;
      }
      this.setState('waiting');
      this.timer = setTimeout(() => this.running && this.connect(), retryInMs);
    };
  }
}
