// Both pages as a user first meets them: served by the relay, no console errors, every control
// labelled and reachable by keyboard, nothing overflowing a phone-sized screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ONAIR_BIN, launchBrowser, openBroadcaster, openPlayer, playerStatus, startRelay, tempDir, waitFor, writeToneWav } from './lib/harness.js';

for (const [path, name] of [['/', 'player'], ['/broadcast', 'broadcaster']]) {
  test(`the ${name} page loads cleanly, labels every control and fits a phone`, async (t) => {
    const relay = await startRelay(t, { streams: [{ name: 'radio', key: 'browser-test-key-0123' }, { name: 'talk', key: 'browser-other-key-0123' }] });
    const browser = await launchBrowser(t, { viewport: { width: 360, height: 740 } });
    const page = await browser.newPage();
    const res = await page.goto(relay.base + path);
    assert.equal(res.status(), 200);
    await page.waitForLoadState('networkidle');
    if (path === '/') await waitFor(() => page.locator('.stream').count().then((n) => n === 2), { what: 'the stream list' });

    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('button, input, select, canvas, video, [role=meter]')]
        .filter((el) => !el.hidden && el.type !== 'hidden')
        .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.textContent.trim()))
        .map((el) => el.outerHTML.slice(0, 80)));
    assert.deepEqual(unlabelled, []);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen`);

    // Tab reaches the main action.
    const main = path === '/' ? 'play' : 'go';
    let reached = false;
    for (let i = 0; i < 20 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate((id) => document.activeElement?.id === id, main);
    }
    assert.ok(reached, `Tab reaches #${main}`);
    assert.deepEqual(browser.errors, []);
  });
}

test('the keyboard starts and stops the player; an offline stream says so', async (t) => {
  const relay = await startRelay(t);
  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  await page.goto(`${relay.base}/?stream=radio`);
  await page.locator('#play').focus();
  await page.keyboard.press('Enter');
  await waitFor(async () => (await page.locator('#conn').textContent()) === 'waiting for source', { what: 'connected, no source' });
  assert.equal(await page.locator('#badge').textContent(), 'Off air');
  assert.match(await page.locator('#status').textContent(), /offline/);
  await page.keyboard.press('Enter');
  await waitFor(async () => (await page.locator('#conn').textContent()) === 'stopped', { what: 'stopped' });
  assert.equal((await playerStatus(page)).connection, 'stopped');
  assert.deepEqual(browser.errors, []);
});

test('a private stream plays from a signed link and explains itself without one', async (t) => {
  const relay = await startRelay(t, { streams: [{ name: 'radio', key: 'browser-test-key-0123', extra: 'listen_secret = "a-private-listening-secret"\n' }] });
  const signed = spawnSync(ONAIR_BIN, ['sign', 'radio', '--secret', 'a-private-listening-secret', '--base', relay.base], { encoding: 'utf8' });
  assert.equal(signed.status, 0, signed.stderr);
  // First line: the WebSocket link; second: the web player link to share.
  const [, pageLink] = signed.stdout.trim().split('\n');
  const link = new URL(pageLink);
  assert.equal(link.searchParams.get('stream'), 'radio');
  const browser = await launchBrowser(t);

  const page = await browser.newPage();
  await page.goto(`${relay.base}/?stream=radio`);
  await page.locator('#play').click();
  await waitFor(async () => /private/.test(await page.locator('#status').textContent()), { what: 'the private-stream hint' });

  const invited = await browser.newPage();
  await invited.goto(pageLink);
  await invited.locator('#play').click();
  await waitFor(async () => (await invited.locator('#conn').textContent()) === 'waiting for source', { what: 'admitted with the signed link' });

  const forged = await browser.newPage();
  await forged.goto(`${relay.base}/?stream=radio&expires=${link.searchParams.get('expires')}&sig=${'0'.repeat(64)}`);
  await forged.locator('#play').click();
  await waitFor(async () => /invalid or has expired/.test(await forged.locator('#status').textContent()), { what: 'the bad-link message' });
  const unexpected = browser.errors.filter((e) => !/WebSocket connection to .* failed/.test(e));
  assert.deepEqual(unexpected, []);
});

test('choosing another stream in the list switches playback to it', async (t) => {
  const relay = await startRelay(t, { streams: [{ name: 'radio', key: 'browser-test-key-0123' }, { name: 'talk', key: 'browser-test-key-0123' }] });
  const wav = writeToneWav(join(tempDir(t), 'tone.wav'));
  const browser = await launchBrowser(t, { args: [`--use-file-for-fake-audio-capture=${wav}`] });
  const talk = await openBroadcaster(browser, relay, { stream: 'talk' });
  await waitFor(() => talk.evaluate(() => globalThis.onair.broadcaster.state === 'live'), { what: 'talk on air' });
  await talk.getByLabel('Title').fill('Talk show');
  await talk.getByRole('button', { name: 'Update' }).click();

  const page = await openPlayer(browser, relay, { stream: 'radio' });
  await waitFor(async () => (await page.locator('#conn').textContent()) === 'waiting for source', { what: 'radio (no source)' });
  await page.getByRole('button', { name: /^talk, live/ }).click();
  await waitFor(async () => (await playerStatus(page))?.playback?.state === 'playing', { what: 'talk playing' });
  assert.equal(await page.locator('#station').textContent(), 'talk');
  await waitFor(async () => (await page.locator('#now-playing').textContent()) === 'Talk show', { what: 'its title' });
  assert.match(page.url(), /stream=talk/);
  assert.deepEqual(browser.errors, []);
});
