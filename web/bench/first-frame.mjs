// How long the watch page takes to show a WebRTC publish over WHEP, from
// navigation to the player's first frame, for each binary given, in one run:
// each serves a stream published from a canvas (WHIP), once with no ICE
// server configured and once with one that never answers (a STUN address
// with nothing behind it, as a slow or blocked STUN or TURN server looks to
// a browser), and the same page is opened ROUNDS times (a fresh page each
// time) in Chromium.
// Usage: node web/bench/first-frame.mjs BIN [BIN...] (scripts/bench/first_frame.sh)
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { percentile, publishClockWhip } from '../tests/latency.mjs';
import { api, freePort, signInNode, startServer, until, stopAndRemove } from '../tests/support.mjs';

const rounds = Number(process.env.ROUNDS ?? 8);
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const deadStun = `stun:127.0.0.1:${await freePort()}`;
const rows = [];
const configs = [['no ICE server', []], ['a STUN server that never answers', ['--webrtc-ice-server', deadStun]]];
for (const bin of process.argv.slice(2)) for (const [config, args] of configs) {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-first-frame-'));
  const { child, base } = await startServer(bin, join(work, 'data'), args);
  const browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
  let publisher;
  try {
    const creator = privateKeyToAccount(generatePrivateKey());
    const token = await signInNode(base, creator);
    const stream = await api(base, '/api/v1/streams', { method: 'POST', token, body: { title: 'First frame', access: 'free' } });
    const key = (await api(base, `/api/v1/streams/${stream.id}/key`, { token })).stream_key;
    const publisherPage = await browser.newPage();
    await publisherPage.goto(`${base}/api/v1/streams`);
    publisher = await publishClockWhip(publisherPage, base, stream.id, key);
    await until('the stream to be live', async () => (await api(base, `/api/v1/streams/${stream.id}`)).whep_url != null, 30_000);
    const samples = [];
    for (let i = 0; i < rounds; i++) {
      const page = await browser.newPage();
      const started = Date.now();
      await page.goto(`${base}/watch/${stream.id}`);
      await page.getByText('Playing over WebRTC: the least delay.').waitFor({ timeout: 30_000 });
      samples.push(Date.now() - started);
      await page.close();
    }
    rows.push({ bin, config, samples });
  } finally {
    await publisher?.stop().catch(() => {});
    await browser.close();
    await stopAndRemove(child, work);
  }
}
console.log('| binary | ICE servers | first frame p50 | max | rounds |');
console.log('| --- | --- | --- | --- | --- |');
for (const { bin, config, samples } of rows) {
  console.log(`| ${bin} | ${config} | ${Math.round(percentile(samples, 50))} ms | ${Math.max(...samples)} ms | ${samples.length} |`);
}
