// A creator's page and the library's order and filters in a real browser.
// One creator uploads two free videos, offers a membership and broadcasts a
// paid stream that becomes a recording; one video is played more often.
// The library sorted by most watched lists it first with its views, and its
// access and length filters show what the API answers for them (kept in
// the URL over a reload). /creators/{address} shows the creator's live
// stream while it is live, then their videos and recordings (newest or most
// watched first) and their memberships; a creator with nothing shows empty
// states, an address that is not one an error. Screenshot: creator.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { api, call, publish, signInNode, startServer, until, uploadVideo, stopAndRemove } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const results = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results');

/** A 3 s test pattern with a tone. */
function makeVideo(path) {
  execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '3', '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '60',
    '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', '-movflags', '+faststart', path]);
}


const short = (address) => `${address.slice(0, 6)}…${address.slice(-4)}`;

/** The ids of the cards the page shows (inside `scope`), in order. */
const shownIds = (page, scope = 'main') => page.evaluate((scope) => [...document.querySelectorAll(`${scope} a.card[data-stream]`)].map((a) => a.dataset.stream), scope);

/** Waits until the page shows exactly `expected` (ids, in order) inside `scope`. */
async function untilShown(page, expected, what, scope = 'main') {
  try {
    await page.waitForFunction(({ scope, expected }) => {
      const ids = [...document.querySelectorAll(`${scope} a.card[data-stream]`)].map((a) => a.dataset.stream);
      return JSON.stringify(ids) === JSON.stringify(expected);
    }, { scope, expected }, { timeout: 10_000, polling: 100 });
  } catch {
    assert.deepEqual(await shownIds(page, scope), expected, what);
  }
}

test('the library sorts by views and filters by access and length; a creator\'s page shows their streams, videos and memberships', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 240_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-creator-'));
  const { child, base, rtmp } = await startServer(bin, join(work, 'data'));
  let browser;
  let publisher;
  try {
    const account = privateKeyToAccount(generatePrivateKey());
    const address = account.address.toLowerCase();
    const token = await signInNode(base, account);

    // The API refuses values it does not know.
    for (const bad of ['sort=loudest', 'access=gratis', 'duration=epic']) {
      const answer = await call(base, `/api/v1/streams?${bad}`);
      assert.equal(answer.status, 400, `${bad} is refused`);
      assert.match(answer.type ?? '', /problem\+json/);
    }

    // 1. Two free videos, then a membership tier.
    const file = join(work, 'clip.mp4');
    makeVideo(file);
    const popular = await uploadVideo(base, token, file, { title: 'Popular clip', access: 'free', category: 'demo' });
    const quiet = await uploadVideo(base, token, file, { title: 'Quiet clip', access: 'free', category: 'demo' });
    const tier = await api(base, '/api/v1/tiers', { method: 'POST', token, body: { name: 'Front Row', price: '3000000', max_height: 720, max_streams: 2, description: 'Every members stream of mine.' } });

    // 2. A paid broadcast: live on the creator's page while it lasts.
    const stream = await api(base, '/api/v1/streams', { method: 'POST', token, body: { title: 'Paid pattern live', access: 'per_second', price: { amount: '60000', period_seconds: 60 } } });
    publisher = publish(rtmp, stream.stream_key, 15);
    await until('the broadcast to be live', async () => (await api(base, `/api/v1/streams/${stream.id}`)).state === 'live', 20_000);

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    mkdirSync(results, { recursive: true });

    await page.goto(`${base}/creators/${address}`);
    await page.locator(`[data-creator-section=live] a.card[data-stream="${stream.id}"]`, { hasText: '0.06 USDC/min' }).waitFor({ timeout: 10_000 });
    await page.locator(`[data-creator-section=live] a.card[data-stream="${stream.id}"] .badge.live`).waitFor();
    await page.locator('[data-creator-summary]', { hasText: 'Live now' }).waitFor();

    // 3. Everything ready: the videos processed, the broadcast a recording.
    for (const video of [popular, quiet]) {
      await until(`${video.title} to be processed`, async () => {
        const now = await api(base, `/api/v1/videos/${video.id}`);
        assert.notEqual(now.status, 'failed', now.failure_reason);
        return now.status === 'ready';
      }, 120_000);
    }
    await until('the broadcast to end', async () => (await api(base, `/api/v1/streams/${stream.id}`)).state === 'ended', 60_000);

    // 4. The popular one is played three times (each master playlist a play).
    for (let i = 0; i < 3; i++) {
      const res = await fetch(base + popular.playback_url);
      assert.equal(res.status, 200, 'the free video\'s master playlist');
      await res.text();
    }
    const counted = await until('the plays to be counted', async () => {
      const now = await api(base, `/api/v1/videos/${popular.id}`);
      return now.views >= 3 ? now : null;
    }, 30_000);
    assert.equal(counted.views, 3);
    assert.equal((await api(base, `/api/v1/videos/${quiet.id}`)).views, 0);
    assert.equal((await api(base, `/api/v1/streams/${stream.id}`)).views, 0);

    const apiIds = async (query) => (await api(base, `/api/v1/streams?state=ended&limit=200${query}`)).map((s) => s.id);
    const newest = await apiIds('');
    assert.deepEqual(newest, [stream.id, quiet.id, popular.id], 'newest first');
    const mostWatched = await apiIds('&sort=most_watched');
    assert.deepEqual(mostWatched, [popular.id, stream.id, quiet.id], 'most watched first, then newest');

    // 5. The library: newest first by default, most watched first when asked, with views.
    await page.goto(`${base}/library`);
    await untilShown(page, newest, 'the library lists newest first');
    await page.goto(`${base}/library?sort=most_watched`);
    await untilShown(page, mostWatched, 'the library lists the most watched first, as the API does');
    assert.equal(await page.locator('select[name=sort]').inputValue(), 'most_watched');
    await page.locator(`a.card[data-stream="${popular.id}"] [data-views="3"]`, { hasText: '3 views' }).waitFor();
    await page.locator(`a.card[data-stream="${quiet.id}"] [data-views="0"]`, { hasText: '0 views' }).waitFor();
    // Each card links to its creator's page.
    assert.equal(await page.locator(`li.card-item:has(a.card[data-stream="${popular.id}"]) a.card-owner`).getAttribute('href'), `/creators/${address}`);

    // Choosing the order in the page lists again.
    await page.locator('select[name=sort]').selectOption('newest');
    await untilShown(page, newest, 'back to newest first');
    assert.equal(new URL(page.url()).searchParams.get('sort'), null);
    await page.locator('select[name=sort]').selectOption('most_watched');
    await untilShown(page, mostWatched, 'most watched first again');
    assert.equal(new URL(page.url()).searchParams.get('sort'), 'most_watched');

    // 6. Access: free shows the videos, pay per second the recording; the URL keeps it.
    const free = await apiIds('&sort=most_watched&access=free');
    assert.deepEqual(free, [popular.id, quiet.id]);
    await page.locator('select[name=access]').selectOption('free');
    await untilShown(page, free, 'free: what the API answers for access=free');
    assert.equal(new URL(page.url()).searchParams.get('access'), 'free');
    await page.reload();
    await untilShown(page, free, 'free, after a reload');
    assert.equal(await page.locator('select[name=access]').inputValue(), 'free');
    assert.equal(await page.locator('select[name=sort]').inputValue(), 'most_watched');
    const perSecond = await apiIds('&sort=most_watched&access=per_second');
    assert.deepEqual(perSecond, [stream.id]);
    await page.locator('select[name=access]').selectOption('per_second');
    await untilShown(page, perSecond, 'pay per second: what the API answers');
    assert.deepEqual(await apiIds('&access=members'), []);
    await page.locator('select[name=access]').selectOption('members');
    await untilShown(page, [], 'members: nothing');
    await page.locator('[data-empty]', { hasText: 'Nothing matches these filters.' }).waitFor();

    // 7. Length: everything here is under 4 minutes.
    await page.locator('select[name=access]').selectOption('');
    await untilShown(page, mostWatched, 'any access');
    assert.deepEqual(await apiIds('&sort=most_watched&duration=long'), []);
    await page.locator('select[name=duration]').selectOption('long');
    await untilShown(page, [], 'over 20 minutes: nothing');
    await page.locator('[data-empty]', { hasText: 'Nothing matches these filters.' }).waitFor();
    assert.deepEqual(await apiIds('&sort=most_watched&duration=medium'), []);
    await page.locator('select[name=duration]').selectOption('medium');
    await untilShown(page, [], '4 to 20 minutes: nothing');
    const shortOnes = await apiIds('&sort=most_watched&duration=short');
    assert.deepEqual(shortOnes, mostWatched);
    await page.locator('select[name=duration]').selectOption('short');
    await untilShown(page, shortOnes, 'under 4 minutes: everything');
    await page.goto(`${base}/library?access=free&duration=short&sort=most_watched`);
    await untilShown(page, await apiIds('&sort=most_watched&access=free&duration=short'), 'a link with access, length and order');
    await page.goto(`${base}/library?sort=bogus&access=bogus`);
    await untilShown(page, newest, 'unknown values in a link are ignored');

    // 8. The creator's page: header, nothing live now, videos and recordings, memberships.
    await page.goto(`${base}/creators/${address}`);
    const heading = page.locator('h1[data-creator]');
    await heading.waitFor({ timeout: 10_000 });
    assert.equal(await heading.textContent(), short(address));
    assert.equal(await heading.getAttribute('title'), address);
    assert.equal(await page.title(), `${short(address)} · StreamWeave`);
    await page.locator('[data-creator-section=live] [data-empty]', { hasText: 'Not live right now.' }).waitFor({ timeout: 10_000 });
    const owned = await api(base, `/api/v1/streams?owner=${address}&state=ended`);
    await untilShown(page, owned.map((s) => s.id), 'their videos and recordings, newest first', '[data-creator-section=videos]');
    await page.locator('[data-creator-summary]', { hasText: '3 videos and recordings · 3 views' }).waitFor();
    const tierCard = page.locator(`[data-creator-section=tiers] li[data-tier="${tier.id}"]`);
    await tierCard.locator('.tier-name', { hasText: 'Front Row' }).waitFor();
    await tierCard.locator('.tier-price', { hasText: '3.00 USDC per 30 days' }).waitFor();
    assert.equal(await tierCard.locator('a').getAttribute('href'), `/membership?creator=${address}`);
    await page.locator('[data-creator-section=videos] select[name=sort]').selectOption('most_watched');
    const ownedWatched = (await api(base, `/api/v1/streams?owner=${address}&state=ended&sort=most_watched`)).map((s) => s.id);
    assert.equal(ownedWatched[0], popular.id);
    await untilShown(page, ownedWatched, 'their most watched first', '[data-creator-section=videos]');
    assert.equal(new URL(page.url()).searchParams.get('sort'), 'most_watched');
    await page.reload();
    await untilShown(page, ownedWatched, 'most watched first after a reload', '[data-creator-section=videos]');
    await page.locator(`[data-creator-section=videos] a.card[data-stream="${popular.id}"] [data-views]`, { hasText: '3 views' }).waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('a.card img')].every((i) => i.complete), null, { timeout: 10_000 }).catch(() => {});
    await page.screenshot({ path: join(results, 'creator.png'), fullPage: true });

    // 9. A creator with nothing yet, and an address that is not one.
    const nobody = privateKeyToAccount(generatePrivateKey()).address.toLowerCase();
    await page.goto(`${base}/creators/${nobody}`);
    await page.locator('[data-creator-section=live] [data-empty]', { hasText: 'Not live right now.' }).waitFor({ timeout: 10_000 });
    await page.locator('[data-creator-section=videos] [data-empty]', { hasText: 'No videos or recordings yet.' }).waitFor();
    await page.locator('[data-creator-section=tiers] [data-empty]', { hasText: 'This creator offers no memberships yet.' }).waitFor();
    await page.goto(`${base}/creators/not-an-address`);
    await page.locator('[data-creator-error]', { hasText: '"not-an-address" is not a creator\'s address' }).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('h1').textContent(), 'Creator not found');

    // 10. The watch page's "by" links to the creator's page.
    await page.goto(`${base}/watch/${quiet.id}`);
    await page.locator(`.watch-main a[href="/creators/${address}"]`, { hasText: short(address) }).click({ timeout: 10_000 });
    await page.waitForURL(`${base}/creators/${address}`);
    await page.locator('h1[data-creator]').waitFor({ timeout: 10_000 });

    assert.deepEqual(errors, [], 'no script errors');
  } finally {
    publisher?.kill();
    await browser?.close();
    await stopAndRemove(child, work);
  }
});
