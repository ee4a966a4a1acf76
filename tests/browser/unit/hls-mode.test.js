// Unit tests of how the listener page picks its player (hls-player.js chooseMode): HLS on iOS
// and iPadOS and without WebCodecs, the WebSocket player elsewhere, the URL's choice first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseMode } from '../../../web-player/hls-player.js';

const IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1';
// iPadOS Safari asks for desktop sites: a Mac's user agent, but a touch screen.
const IPAD = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15';
const LINUX = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36';

/**
 * The mode chosen in a browser with this user agent, touch points and WebCodecs or not.
 * @param {string} query
 * @param {{userAgent: string, maxTouchPoints?: number, webCodecs?: boolean}} browser
 */
function modeIn(query, { userAgent, maxTouchPoints = 0, webCodecs = true }) {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent, maxTouchPoints }, configurable: true });
  if (webCodecs) globalThis.AudioDecoder = class {};
  try {
    return chooseMode(new URLSearchParams(query)).mode;
  } finally {
    delete globalThis.AudioDecoder;
    if (saved) Object.defineProperty(globalThis, 'navigator', saved);
    else delete globalThis.navigator;
  }
}

test('iPhone and iPad play HLS from the start; a Mac and Linux the WebSocket player', () => {
  assert.equal(modeIn('', { userAgent: IPHONE, maxTouchPoints: 5 }), 'hls');
  assert.equal(modeIn('', { userAgent: IPAD, maxTouchPoints: 5 }), 'hls');
  assert.equal(modeIn('', { userAgent: IPAD, maxTouchPoints: 0 }), 'websocket', 'a Mac');
  assert.equal(modeIn('', { userAgent: LINUX }), 'websocket');
});

test('without WebCodecs the page plays HLS', () => {
  assert.equal(modeIn('', { userAgent: LINUX, webCodecs: false }), 'hls');
});

test('the URL decides first: ?mode=hls, ?mode=websocket, or a ?decoder= of the WebSocket player', () => {
  assert.equal(modeIn('?mode=hls', { userAgent: LINUX }), 'hls');
  assert.equal(modeIn('?mode=websocket', { userAgent: IPHONE, maxTouchPoints: 5 }), 'websocket');
  assert.equal(modeIn('?stream=radio&decoder=wasm', { userAgent: LINUX, webCodecs: false }), 'websocket');
});
