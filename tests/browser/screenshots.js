#!/usr/bin/env node
// Takes the screenshots in docs/: the player playing a stream with its title showing, and the
// broadcaster on air with its camera. Not a test; run by hand after a UI change:
//   node tests/browser/screenshots.js docs        (ONAIR_BIN as for run.sh)
// Also writes phone-sized versions (*-phone.png) for a look; only the two desktop ones are kept.
import { join, resolve } from 'node:path';
import { mkdirSync } from 'node:fs';
import { launchBrowser, openBroadcaster, openPlayer, sample, startPush, startRelay, tempDir, waitFor, writeToneWav } from './lib/harness.js';

const out = resolve(process.argv[2] ?? 'screenshots');
mkdirSync(out, { recursive: true });
const hooks = [];
const t = { after: (fn) => hooks.push(fn) };

async function nowPlaying(page, title, artist) {
  await page.getByLabel('Title').fill(title);
  await page.getByLabel('Artist').fill(artist);
  await page.getByRole('button', { name: 'Update' }).click();
}

try {
  const relay = await startRelay(t, { streams: [{ name: 'radio', key: 'browser-test-key-0123' }, { name: 'studio', key: 'browser-test-key-0123' }, { name: 'night-shift', key: 'browser-test-key-0123' }] });
  const wav = writeToneWav(join(tempDir(t), 'tone.wav'), { freq: 440, amplitude: 0.3 });
  const browser = await launchBrowser(t, { args: [`--use-file-for-fake-audio-capture=${wav}`] });

  // "radio": onair push with the tagged music sample when it is there, else a mic.
  const music = sample('music.ogg');
  if (music) {
    startPush(t, relay, music);
  } else {
    const radio = await openBroadcaster(browser, relay, { stream: 'radio' });
    await waitFor(() => radio.evaluate(() => globalThis.onair.broadcaster.state === 'live'));
    await nowPlaying(radio, 'Night Drive', 'The Tone Generators');
  }
  const studio = await openBroadcaster(browser, relay, { stream: 'studio', camera: true });
  await waitFor(() => studio.evaluate(() => globalThis.onair.broadcaster.state === 'live'));
  await nowPlaying(studio, 'Morning Show', 'Studio A');

  const listener = await openPlayer(browser, relay, { stream: 'studio' });
  const player = await openPlayer(browser, relay, { stream: 'radio' });
  await waitFor(() => player.evaluate(() => globalThis.onair.player.status().nowPlaying), { timeout: 15_000, what: 'a title' });
  await player.waitForTimeout(4000); // let the list refresh with listener counts and the meter move
  await player.screenshot({ path: join(out, 'screenshot-player.png') });
  await studio.bringToFront();
  await studio.waitForTimeout(2500);
  await studio.screenshot({ path: join(out, 'screenshot-broadcast.png'), fullPage: true });
  await listener.screenshot({ path: join(out, 'player-video.png') });

  for (const page of [player, studio]) await page.setViewportSize({ width: 390, height: 844 });
  await player.waitForTimeout(500);
  await player.screenshot({ path: join(out, 'screenshot-player-phone.png'), fullPage: true });
  await studio.screenshot({ path: join(out, 'screenshot-broadcast-phone.png'), fullPage: true });
  if (browser.errors.length) console.error('console errors:\n' + browser.errors.join('\n'));
  console.log(`screenshots in ${out}`);
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  for (const fn of hooks.reverse()) await fn();
  process.exit();
}
