// The player's and broadcaster's modules used the ways their own pages never use them: the
// public API edges that the type check (make typecheck-js) showed were unguarded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startRelay } from './lib/harness.js';

test('the engines handle what their pages never do', async (t) => {
  const relay = await startRelay(t);
  const browser = await launchBrowser(t);

  await t.test('the camera fallback without a preview element captures into a hidden one', async () => {
    // Regression: captureVideo read `preview.readyState` of a null preview every 40 ms.
    const page = await browser.newPage();
    await page.goto(`${relay.base}/broadcast`);
    const got = await page.evaluate(async () => {
      const { captureVideo } = await import('./capture.js');
      const media = await navigator.mediaDevices.getUserMedia({ video: true });
      let frames = 0;
      let width = 0;
      const stop = await captureVideo(media.getVideoTracks()[0], (frame) => {
        frames++;
        width = frame.displayWidth;
        frame.close();
      }, null, true);
      await new Promise((r) => setTimeout(r, 1000));
      stop();
      const atStop = frames;
      await new Promise((r) => setTimeout(r, 200));
      media.getTracks().forEach((track) => track.stop());
      return { frames: atStop, after: frames - atStop, width };
    });
    assert.ok(got.frames >= 10, `${got.frames} pictures in 1 s (25 fps expected)`);
    assert.equal(got.width, 640, 'the fake camera is 640 wide');
    assert.equal(got.after, 0, 'no picture after stop()');
  });

  await t.test('Player.setVolume between stop() and the next play() is kept for that play', async () => {
    // Regression: it threw reading currentTime of the stopped player's null AudioContext.
    const page = await browser.newPage();
    await page.goto(`${relay.base}/`);
    const gain = await page.evaluate(async () => {
      const { Player } = await import('./player.js');
      const player = new Player({ stream: 'radio' });
      await player.play();
      await player.stop();
      player.setVolume(0.25);
      await player.play();
      const value = player.gain?.gain.value;
      await player.stop();
      return value;
    });
    assert.equal(gain, 0.25);
  });

  await t.test('a vendor script that defines no decoder is refused at once, and a retry loads the real one', async () => {
    // Regression: loadWasmOpus resolved with undefined and kept that promise.
    const page = await browser.newPage();
    const empty = (route) => route.fulfill({ contentType: 'text/javascript', headers: { 'cache-control': 'no-store' }, body: '// not the decoder\n' });
    await page.route('**/vendor/opus-decoder.min.js', empty);
    await page.goto(`${relay.base}/`);
    const first = await page.evaluate(() => import('./decoder.js').then((m) => m.loadWasmOpus()).then(() => 'loaded', (err) => err.message));
    assert.match(first, /defines no "opus-decoder"/);
    await page.unroute('**/vendor/opus-decoder.min.js', empty);
    const again = await page.evaluate(() => import('./decoder.js').then((m) => m.loadWasmOpus()).then((m) => typeof m.OpusDecoder, (err) => err.message));
    assert.equal(again, 'function');
  });

  assert.deepEqual(browser.errors, []);
});
