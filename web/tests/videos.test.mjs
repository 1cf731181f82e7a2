// Uploaded videos in a real browser: a creator signs in to the studio with
// a demo wallet and uploads a file made by ffmpeg on a slow connection: it
// goes on from the last whole chunk after leaving the page (every PATCH
// carries a sha256 checksum, so the server keeps nothing of a chunk cut
// short), and pauses and resumes.
// The video processes to ready; the library finds it and it plays, and the
// watch page resumes where playback was left off. A paid video plays
// through a payment channel and seeks. Screenshots land in web/test-results/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHUNK_SIZE, makeTwoChunkVideo, startServer, uploadVideo, stopAndRemove } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const results = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results');



async function api(base, path, { method = 'GET', body, token } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}


const videoTime = (page) => page.evaluate(() => document.querySelector('sw-player')?.shadowRoot.querySelector('video').currentTime ?? 0);

test('a creator uploads a video (paused and resumed), it processes, and it plays from the library', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 240_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-videos-'));
  const { child, base } = await startServer(bin, join(work, 'data'));
  let browser;
  try {
    const file = join(work, 'test-pattern.mp4');
    makeTwoChunkVideo(file);
    const size = statSync(file).size;
    assert.ok(size > CHUNK_SIZE + 1_000_000, `more than one chunk (${size} bytes)`);

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('dialog', (dialog) => dialog.accept());
    mkdirSync(results, { recursive: true });

    // 1. Sign in to the studio with a demo wallet.
    await page.goto(`${base}/studio`);
    await page.locator('sw-wallet [data-action=demo-wallet]').first().click();
    const section = page.locator('section.videos');
    await section.waitFor({ timeout: 15_000 });
    await section.locator('[data-videos]', { hasText: 'No videos yet.' }).waitFor({ timeout: 10_000 });

    // 2. Fill in the details and upload on a slow connection.
    const fill = async () => {
      await section.locator('input[name=file]').setInputFiles(file);
      await section.locator('input[name=title]').fill('Test pattern upload');
      await section.locator('textarea[name=description]').fill('Twelve seconds of colour bars and a tone.');
      await section.locator('input[name=category]').fill('demo');
      await section.locator('input[name=tags]').fill('pattern, tone');
      await section.locator('select[name=access]').selectOption('free');
    };
    const slow = async (on) => {
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: on ? 20 : 0, downloadThroughput: -1, uploadThroughput: on ? 1024 * 1024 : -1 });
    };
    await fill();
    await slow(true);
    const firstChunk = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.status() === 204, { timeout: 60_000 });
    await section.locator('[data-action=upload]').click();
    const progress = section.locator('.upload-progress[data-upload-state]');
    await firstChunk;
    const chunkPercent = Math.floor((CHUNK_SIZE / size) * 100);
    await page.waitForFunction((from) => Number(document.querySelector('[data-upload-state]')?.dataset.uploadPercent ?? 0) >= from + 5, chunkPercent, { timeout: 30_000, polling: 100 });

    // The page is left part way through the second chunk; uploading the
    // same file again goes on from what the server has: the first chunk.
    await section.locator('[data-action=pause-upload]').click();
    const stored = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')).map((k) => JSON.parse(localStorage.getItem(k)).uploadUrl));
    assert.equal(stored.length, 1, 'the upload is remembered for resuming');
    const token = await page.evaluate(() => JSON.parse(localStorage.getItem('streamweave.auth')).token);
    // The server keeps the whole chunk, and nothing of the one cut short
    // (its checksum cannot match), also once it sees that request end.
    await new Promise((r) => setTimeout(r, 1000));
    const head = await fetch(new URL(stored[0], base), { method: 'HEAD', headers: { 'tus-resumable': '1.0.0', authorization: `Bearer ${token}` } });
    const serverOffset = Number(head.headers.get('upload-offset'));
    assert.equal(serverOffset, CHUNK_SIZE, 'the server kept the whole chunk sent before the pause');
    await page.reload();
    await section.waitFor({ timeout: 15_000 });
    await fill();
    await slow(true);
    await page.evaluate(() => {
      window.uploadPercents = [];
      const box = document.querySelector('[data-upload-state]');
      new MutationObserver(() => window.uploadPercents.push(Number(box.dataset.uploadPercent))).observe(box, { attributeFilter: ['data-upload-percent'] });
    });
    await section.locator('[data-action=upload]').click();
    await section.locator('[data-upload-progress]', { hasText: 'Going on with the earlier upload' }).waitFor({ timeout: 10_000 });
    const keptPercent = Math.floor((serverOffset / size) * 100);
    await page.waitForFunction((from) => Number(document.querySelector('[data-upload-state]')?.dataset.uploadPercent ?? 0) >= from + 5, keptPercent, { timeout: 30_000, polling: 100 });
    const percents = await page.evaluate(() => window.uploadPercents);
    assert.ok(Math.min(...percents) >= keptPercent, `went on from ${keptPercent}% (${percents.join(', ')})`);

    // 3. Pause: the upload stops where it is; resume: it goes on to the end.
    await section.locator('[data-action=pause-upload]').click();
    assert.equal(await progress.getAttribute('data-upload-state'), 'paused');
    const pausedAt = Number(await progress.getAttribute('data-upload-percent'));
    assert.ok(pausedAt > 0 && pausedAt < 100, `paused part way (${pausedAt}%)`);
    await section.locator('[data-upload-progress]', { hasText: 'Paused at' }).waitFor();
    await section.screenshot({ path: join(results, 'upload.png') });
    await page.waitForTimeout(1500);
    assert.equal(Number(await progress.getAttribute('data-upload-percent')), pausedAt, 'nothing is sent while paused');
    await slow(false);
    await section.locator('[data-action=resume-upload]').click();
    await page.waitForFunction(() => document.querySelector('[data-upload-state]')?.dataset.uploadState === 'done', null, { timeout: 60_000, polling: 100 });

    // 4. The video is made and processed: progress, then ready.
    const processing = section.locator('[data-video-status]');
    await processing.waitFor({ timeout: 15_000 });
    const seen = new Set();
    for (let i = 0; i < 240; i++) {
      seen.add(await section.locator('[data-processing]').textContent());
      if (await processing.getAttribute('data-video-status') !== 'processing') break;
      await page.waitForTimeout(500);
    }
    assert.equal(await processing.getAttribute('data-video-status'), 'ready', `processed: ${[...seen].join(' | ')}`);
    assert.ok([...seen].some((t) => /Processing \d+%/.test(t)), `processing progress was shown: ${[...seen].join(' | ')}`);
    const [video] = await (await fetch(`${base}/api/v1/videos?q=Test%20pattern`)).json();
    assert.equal(video.status, 'ready');
    assert.equal(video.source, 'upload');
    assert.ok(video.duration_ms >= 11_000 && video.duration_ms <= 13_000, `duration ${video.duration_ms} ms`);
    const uploaded = await (await fetch(`${base}/api/v1/streams/${video.id}`)).json();
    assert.equal(uploaded.title, 'Test pattern upload');
    assert.ok(size > 1_000_000);
    await section.locator(`tr[data-video="${video.id}"][data-status=ready]`).waitFor({ timeout: 10_000 });
    await page.screenshot({ path: join(results, 'studio-videos.png'), fullPage: true });

    // 5. The library lists it; filters and search find it.
    await page.goto(`${base}/library`);
    const videoCard = page.locator(`a.card[data-stream="${video.id}"]`);
    await videoCard.waitFor({ timeout: 10_000 });
    await videoCard.locator('.badge', { hasText: 'Video' }).waitFor();
    await videoCard.locator('.duration', { hasText: '0:12' }).waitFor();
    await page.locator('select[name=duration]').selectOption('long');
    await videoCard.waitFor({ state: 'detached', timeout: 5_000 });
    await page.locator('select[name=duration]').selectOption('short');
    await page.locator('select[name=category]').selectOption('demo');
    await page.locator('select[name=tag]').selectOption('tone');
    await page.locator('select[name=access]').selectOption('free');
    await videoCard.waitFor({ timeout: 5_000 });
    await page.locator('input[name=q]').fill('no such title');
    await videoCard.waitFor({ state: 'detached', timeout: 5_000 });
    await page.locator('input[name=q]').fill('pattern');
    await videoCard.waitFor({ timeout: 5_000 });
    // Typing while the list loads again counts: an input event from the
    // page being replaced that arrives once the new page is shown filters
    // the page shown, whose search box then shows the query.
    const staleSearch = await page.locator('input[name=q]').elementHandle();
    await page.locator('[data-library]').evaluate((el) => { el.dataset.replaced = ''; });
    await page.locator('select[name=sort]').selectOption('most_watched');
    await page.locator('[data-library]:not([data-replaced])').waitFor({ timeout: 5_000 });
    await videoCard.waitFor({ timeout: 5_000 });
    await staleSearch.evaluate((input) => { input.value = 'no such title'; input.dispatchEvent(new Event('input')); });
    await videoCard.waitFor({ state: 'detached', timeout: 5_000 });
    assert.equal(await page.locator('input[name=q]').inputValue(), 'no such title');
    await page.locator('input[name=q]').fill('pattern');
    await videoCard.waitFor({ timeout: 5_000 });
    // Typing into the search while the list loads again (held here until
    // the keys are typed): the page that replaces it keeps the search box
    // focused with what was typed, so the next keys land there too.
    let releaseList;
    const listHeld = new Promise((resolve) => { releaseList = resolve; });
    await page.route(/\/api\/v1\/videos\?/, async (route) => { await listHeld; await route.continue(); });
    await page.locator('[data-library]').evaluate((el) => { el.dataset.replaced = ''; });
    await page.locator('select[name=sort]').selectOption('newest');
    await page.locator('input[name=q]').click();
    await page.keyboard.press('Control+A');
    await page.keyboard.type('patt');
    assert.equal(await page.locator('[data-library][data-replaced]').count(), 1, 'the list is still loading');
    releaseList();
    await page.locator('[data-library]:not([data-replaced])').waitFor({ timeout: 5_000 });
    await page.unroute(/\/api\/v1\/videos\?/);
    assert.deepEqual(await page.evaluate(() => [document.activeElement?.name, document.activeElement?.value]), ['q', 'patt']);
    await videoCard.waitFor({ timeout: 5_000 });
    await page.keyboard.type('ern, or not');
    await videoCard.waitFor({ state: 'detached', timeout: 5_000 });
    assert.equal(new URL(page.url()).searchParams.get('q'), 'pattern, or not');
    await page.locator('input[name=q]').fill('pattern');
    await videoCard.waitFor({ timeout: 5_000 });
    await page.waitForFunction(() => [...document.querySelectorAll('a.card img')].every((i) => i.complete), null, { timeout: 10_000 }).catch(() => {});
    await page.screenshot({ path: join(results, 'library.png') });

    // 6. It plays from the library, and shows its duration.
    await videoCard.click();
    await page.waitForURL(`${base}/watch/${video.id}`);
    await page.locator('[data-duration-ms]', { hasText: '0:12' }).waitFor({ timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector('sw-player')?.shadowRoot.querySelector('video').currentTime > 6, null, { timeout: 60_000, polling: 250 });
    await page.evaluate(() => document.querySelector('sw-player').shadowRoot.querySelector('video').pause());
    const leftAt = await videoTime(page);

    // 7. Back on the watch page, playback resumes where it was left off.
    await page.reload();
    await page.waitForFunction(() => document.querySelector('sw-player')?.getAttribute('state') === 'playing', null, { timeout: 30_000, polling: 250 });
    await page.locator('sw-player [data-status]', { hasText: 'where you left off' }).waitFor({ timeout: 10_000 });
    const resumedAt = await videoTime(page);
    assert.ok(resumedAt >= leftAt - 3, `resumed at ${resumedAt} s (left at ${leftAt} s)`);

    // 8. A paid video plays through a payment channel, and seeks (it is on demand).
    const creator = await page.evaluate(() => JSON.parse(localStorage.getItem('streamweave.auth')));
    const paid = await uploadVideo(base, creator.token, file, { title: 'Paid pattern', access: 'per_second', price: { amount: '60000', period_seconds: 60 } });
    for (let i = 0; (await api(base, `/api/v1/videos/${paid.id}`)).status === 'processing'; i++) {
      assert.ok(i < 240, 'the paid video is processed');
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal((await api(base, `/api/v1/videos/${paid.id}`)).status, 'ready');
    const viewer = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    viewer.on('pageerror', (e) => errors.push(e.message));
    await viewer.goto(`${base}/watch/${paid.id}`);
    await viewer.locator('.watch-main p.muted', { hasText: '0.06 USDC/min' }).waitFor({ timeout: 10_000 });
    await viewer.locator('sw-player [data-action=demo-wallet]').click();
    await viewer.locator('sw-player [data-action=start]').click({ timeout: 30_000 });
    await viewer.waitForFunction(() => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime > 2, null, { timeout: 60_000, polling: 250 });
    await viewer.evaluate(() => { document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime = 8; });
    await viewer.waitForFunction(() => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime > 9, null, { timeout: 30_000, polling: 250 });
    const spent = await viewer.locator('sw-player [data-meter=spent]').getAttribute('data-base-units');
    assert.ok(BigInt(spent) > 0n, `the viewer paid (${spent})`);
    await viewer.screenshot({ path: join(results, 'watch-video.png') });

    // 9. The creator removes the free one from the studio.
    await page.goto(`${base}/studio`);
    await section.locator(`tr[data-video="${video.id}"] [data-action=delete-video]`).click({ timeout: 15_000 });
    await section.locator(`tr[data-video="${video.id}"]`).waitFor({ state: 'detached', timeout: 10_000 });

    assert.deepEqual(errors, [], 'no script errors');
  } finally {
    await browser?.close();
    await stopAndRemove(child, work);
  }
});
