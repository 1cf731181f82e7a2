// The watch page in a real browser: Debian's Chromium (installed by
// scripts/test) driven by playwright-core plays a live stream published by
// ffmpeg through the real binary; the video's time advances, and a
// screenshot is kept in web/test-results/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const results = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results');

test('the watch page plays a live stream in Chromium', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 120_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-browser-'));
  const { child, base, rtmp } = await startServer(bin, join(work, 'data'), ['--admin-token', 'browser-test']);
  let publisher;
  let browser;
  try {
    const created = await (await fetch(`${base}/api/v1/streams`, {
      method: 'POST',
      headers: { authorization: 'Bearer browser-test', 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'In the browser' }),
    })).json();
    publisher = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', '40', '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '60', '-pix_fmt', 'yuv420p', '-c:a', 'aac',
      '-f', 'flv', `rtmp://${rtmp}/live/${created.stream_key}`], { stdio: 'ignore' });
    browser = await chromium.launch({
      executablePath: browserPath,
      args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'],
    });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(`${base}/watch/${created.id}`);
    // It joins as soon as the stream is live, and retries until segments exist.
    await page.waitForFunction(() => document.getElementById('status').textContent === 'Live', null, { timeout: 30_000 });
    // Playing: the video element's time moves forward.
    await page.waitForFunction(() => document.getElementById('video').currentTime > 1, null, { timeout: 45_000 });
    const first = await page.evaluate(() => document.getElementById('video').currentTime);
    await page.waitForTimeout(3000);
    const later = await page.evaluate(() => document.getElementById('video').currentTime);
    assert.ok(later > first + 1, `the video advances (${first} s, then ${later} s)`);
    assert.equal(await page.locator('#title').textContent(), 'In the browser');
    assert.ok((await page.locator('#streams li').count()) >= 1);
    assert.deepEqual(pageErrors, [], 'no script errors');
    mkdirSync(results, { recursive: true });
    await page.screenshot({ path: join(results, 'watch.png') });
  } finally {
    await browser?.close();
    publisher?.kill();
    child.kill();
    rmSync(work, { recursive: true, force: true });
  }
});
