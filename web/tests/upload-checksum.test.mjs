// Upload checksums in a real browser: every PATCH the studio's uploader
// sends carries `Upload-Checksum: sha256 <base64>` of its body (checked
// here against the file's own bytes at that offset). The first PATCH is
// damaged on the way once (a byte of its `moov` box flipped): the server
// answers 460 and keeps nothing of it, the uploader sends the chunk again,
// and the video made of the upload processes to ready (a file with that
// byte flipped could not be read).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHUNK_SIZE, makeTwoChunkVideo, startServer, stopAndRemove } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';


const sha256 = (bytes) => createHash('sha256').update(bytes).digest('base64');

test('every upload PATCH carries its sha256, and a chunk damaged on the way is refused and sent again', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 180_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-upload-checksum-'));
  const { child, base } = await startServer(bin, join(work, 'data'));
  let browser;
  try {
    const file = join(work, 'noisy-pattern.mp4');
    makeTwoChunkVideo(file);
    const bytes = readFileSync(file);
    assert.ok(bytes.length > CHUNK_SIZE, `more than one chunk (${bytes.length} bytes)`);
    // The byte damaged on the way: without the `moov` box the file cannot be read.
    const moov = bytes.indexOf('moov');
    assert.ok(moov > 0 && moov < CHUNK_SIZE, `moov at ${moov}, in the first chunk`);

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox'] });
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // What the browser really sent: each PATCH's headers, and the status it got.
    const patches = [];
    page.on('request', (request) => {
      if (request.method() === 'PATCH' && new URL(request.url()).pathname.startsWith('/api/v1/uploads/')) {
        const entry = { headers: request.headers(), status: null, offsetAfter: null };
        patches.push(entry);
        request.response().then((response) => {
          entry.status = response?.status() ?? null;
          entry.offsetAfter = response?.headers()['upload-offset'] ?? null;
        }, () => {});
      }
    });
    // The first PATCH is damaged on the way, once.
    let damaged = null;
    await page.route('**/api/v1/uploads/*', async (route) => {
      const request = route.request();
      if (request.method() !== 'PATCH' || damaged) return route.fallback();
      const offset = Number(request.headers()['upload-offset']);
      const body = Buffer.from(bytes.subarray(offset, Math.min(offset + CHUNK_SIZE, bytes.length)));
      body[moov - offset] ^= 0x20; // "moov" -> "mOov"
      damaged = { offset, length: body.length };
      await route.continue({ postData: body });
    });

    // Sign in to the studio with a demo wallet and upload the file.
    await page.goto(`${base}/studio`);
    await page.locator('sw-wallet [data-action=demo-wallet]').first().click();
    const section = page.locator('section.videos');
    await section.waitFor({ timeout: 15_000 });
    await section.locator('input[name=file]').setInputFiles(file);
    await section.locator('input[name=title]').fill('Checksummed upload');
    await section.locator('select[name=access]').selectOption('free');
    await section.locator('[data-action=upload]').click();
    await page.waitForFunction(() => document.querySelector('[data-upload-state]')?.dataset.uploadState === 'done', null, { timeout: 60_000, polling: 100 });
    await page.unroute('**/api/v1/uploads/*');
    // The last responses' events may come just after.
    for (let i = 0; i < 50 && patches.some((p) => p.status === null); i++) await new Promise((r) => setTimeout(r, 100));

    // Every PATCH carried the sha256 of the file's bytes it was sent with.
    assert.ok(patches.length >= 3, `PATCHes: ${JSON.stringify(patches.map((p) => [p.headers['upload-offset'], p.status]))}`);
    for (const { headers } of patches) {
      const checksum = headers['upload-checksum'];
      assert.ok(checksum?.startsWith('sha256 '), `PATCH at ${headers['upload-offset']} carries Upload-Checksum (${checksum})`);
      const offset = Number(headers['upload-offset']);
      const chunk = bytes.subarray(offset, Math.min(offset + CHUNK_SIZE, bytes.length));
      assert.equal(checksum, `sha256 ${sha256(chunk)}`, `PATCH at ${offset}: the digest of bytes ${offset}..${offset + chunk.length}`);
    }

    // The damaged one was refused with 460 and sent again; then the upload went on to the end.
    assert.deepEqual(damaged, { offset: 0, length: CHUNK_SIZE });
    assert.deepEqual(patches.map((p) => [Number(p.headers['upload-offset']), p.status]),
      [[0, 460], [0, 204], [CHUNK_SIZE, 204]]);
    assert.equal(Number(patches.at(-1).offsetAfter), bytes.length, 'the server has every byte');

    // The video is made of what the server kept: it is the right file, so it processes to ready.
    const status = section.locator('[data-video-status]');
    await status.waitFor({ timeout: 15_000 });
    for (let i = 0; i < 240 && (await status.getAttribute('data-video-status')) === 'processing'; i++) await page.waitForTimeout(500);
    assert.equal(await status.getAttribute('data-video-status'), 'ready');
    const [video] = await (await fetch(`${base}/api/v1/videos?q=Checksummed`)).json();
    assert.equal(video.status, 'ready');
    assert.ok(video.duration_ms >= 11_000 && video.duration_ms <= 13_000, `duration ${video.duration_ms} ms`);

    assert.deepEqual(errors, [], 'no script errors');
  } finally {
    await browser?.close();
    await stopAndRemove(child, work);
  }
});
