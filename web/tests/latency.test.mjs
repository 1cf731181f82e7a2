// The glass-to-glass measurement works end to end: frames stamped with the
// publisher's clock go out over RTMP, through the ladder, and come back in
// Chromium over LL-HLS (hls.js in low-latency mode) and over plain HLS; the
// page reads the stamp of each displayed frame. Asserted: the stamps read
// back (the barcode survives the ladder) within the stream's minute, and
// latency is positive (a frame is never shown before it was made). The
// figures themselves are a benchmark (scripts/bench/latency.sh), not a test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { api, signInNode, startServer, until, stopAndRemove } from './support.mjs';
import { decodeTime, encodeTime, firstSegment, publishClock, watchLatency } from './latency.mjs';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';

test('the barcode carries a time and refuses a misread', () => {
  const time = 1_796_000_123_456;
  const bits = encodeTime(time);
  assert.equal(bits.length, 52);
  assert.equal(decodeTime(bits), time);
  bits[17] ^= 1;
  assert.equal(decodeTime(bits), null);
});

test('frames stamped by the publisher are read back in Chromium over LL-HLS and HLS', { skip: !bin && 'STREAMWEAVE_BIN not set', timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sw-latency-'));
  const server = await startServer(bin, dir);
  const browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
  let publisher;
  try {
    const token = await signInNode(server.base, privateKeyToAccount(generatePrivateKey()));
    const stream = await api(server.base, '/api/v1/streams', { method: 'POST', token, body: { title: 'clock' } });
    publisher = publishClock(`rtmp://${server.rtmp}/live/${stream.stream_key}`, 60);
    await until('the stream to go live', async () => (await api(server.base, `/api/v1/streams/${stream.id}`)).state === 'live');
    await firstSegment(server.base, stream.id);
    const page = await browser.newPage();
    await page.goto(`${server.base}/api/v1/streams`);
    const url = `${server.base}/live/${stream.id}/master.m3u8`;
    for (const lowLatencyMode of [true, false]) {
      const { samples, firstFrameMs, unreadable } = await watchLatency(page, url, { lowLatencyMode, seconds: 6 });
      assert.ok(samples.length >= 60, `${lowLatencyMode ? 'LL-HLS' : 'HLS'}: ${samples.length} frames read, ${unreadable} unreadable`);
      assert.ok(unreadable <= samples.length / 10, `mostly readable: ${unreadable} of ${samples.length + unreadable}`);
      assert.ok(firstFrameMs > 0);
      assert.ok(samples.every((ms) => ms > 0), 'no frame is shown before it was made');
      // The stream is a minute long: a stamp further back is a misread.
      assert.ok(samples.every((ms) => ms < 60_000), `stamps within the stream: ${Math.max(...samples)} ms`);
    }
  } finally {
    publisher?.stop();
    await browser.close();
    await stopAndRemove(server.child, dir);
  }
});
