// The web app in a real browser: Debian's Chromium (installed by
// scripts/test) driven by playwright-core against the real binary, with a
// live ffmpeg test source. Viewers sign in with demo wallets, pay a priced
// stream from the page, chat and tip; the creator's studio shows the same
// earnings as the ledger; a viewer who hits the cap sees playback stop.
// Screenshots of each page land in web/test-results/ (the README's tour).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { startServer, stopAndRemove } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const results = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results');
const ADMIN = 'webapp-test';

function publish(rtmp, key, seconds) {
  return spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(seconds), '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '60', '-pix_fmt', 'yuv420p', '-c:a', 'aac',
    '-f', 'flv', `rtmp://${rtmp}/live/${key}`], { stdio: 'ignore' });
}

async function api(base, path, { method = 'GET', body, token } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return data;
}

async function signInNode(base, account) {
  const challenge = await api(base, '/api/v1/auth/challenge', { method: 'POST', body: { address: account.address } });
  const signature = await account.signMessage({ message: challenge.message });
  return (await api(base, '/api/v1/auth/login', { method: 'POST', body: { message: challenge.message, signature } })).token;
}

/** What a page's sign-in stored: {address, token} and the channel it opened to `payee`. */
async function pageWallet(page, payee) {
  return page.evaluate((payee) => {
    const auth = JSON.parse(localStorage.getItem('streamweave.auth'));
    const channel = JSON.parse(localStorage.getItem(`streamweave.channel:${auth.address}:${payee}`) || 'null');
    return { ...auth, channel: channel?.id };
  }, payee);
}

const videoTime = (page) => page.evaluate(() => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime);

test('viewers pay, chat and tip in the browser; the studio shows the ledger\'s earnings', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 240_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-webapp-'));
  const { child, base, rtmp } = await startServer(bin, join(work, 'data'), ['--admin-token', ADMIN]);
  const publishers = [];
  let browser;
  try {
    // A creator (their key signs in from Node here, and from the studio page).
    const creatorKey = generatePrivateKey();
    const creator = privateKeyToAccount(creatorKey);
    const creatorToken = await signInNode(base, creator);
    const stream = await api(base, '/api/v1/streams', {
      method: 'POST', token: creatorToken,
      body: { title: 'Late Night Jazz', description: 'Standards, live.', category: 'music', tags: ['jazz', 'piano'], access: 'per_second', price: { amount: '60000', period_seconds: 60 } },
    });
    const free = await api(base, '/api/v1/streams', { method: 'POST', token: ADMIN, body: { title: 'Morning test pattern', category: 'demo' } });
    publishers.push(publish(rtmp, stream.stream_key, 150), publish(rtmp, free.stream_key, 150));
    const payee = creator.address.toLowerCase();

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const errors = [];
    const newPage = async (width = 1280, height = 900) => {
      const context = await browser.newContext({ viewport: { width, height } });
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      return page;
    };
    mkdirSync(results, { recursive: true });

    // 1. A viewer with a demo wallet plays the priced stream for over 10 s.
    const viewer = await newPage();
    await viewer.goto(`${base}/watch/${stream.id}`);
    await viewer.locator('sw-player [data-action=demo-wallet]').click();
    await viewer.locator('sw-player [data-action=start]').click({ timeout: 30_000 });
    await viewer.waitForFunction(() => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime > 10, null, { timeout: 90_000, polling: 500 });

    // 2. Chat and tip from the viewer.
    await viewer.locator('sw-chat input[name=message]').fill('hello from the viewer');
    await viewer.locator('sw-chat input[name=message]').press('Enter');
    await viewer.locator('sw-chat li', { hasText: 'hello from the viewer' }).waitFor({ timeout: 10_000 });
    await viewer.locator('sw-tip select[name=amount]').selectOption('0.50');
    await viewer.locator('sw-tip input[name=tip-message]').fill('thanks for the set');
    await viewer.locator('sw-tip button[type=submit]').click();
    await viewer.locator('sw-tip [role=status]', { hasText: 'Sent 0.50 USDC' }).waitFor({ timeout: 10_000 });
    // A live reaction floats over the player (as its moment plays).
    await viewer.locator('sw-chat [data-react="🔥"]').click();
    await viewer.locator('sw-player .reaction[data-reaction="🔥"]').waitFor({ state: 'attached', timeout: 15_000 });
    await viewer.screenshot({ path: join(results, 'watch.png') });

    // 3. Pausing stops paying; the meter then equals the ledger to the unit.
    await viewer.evaluate(() => document.querySelector('sw-player').shadowRoot.querySelector('video').pause());
    await viewer.waitForTimeout(2500);
    const wallet = await pageWallet(viewer, payee);
    assert.ok(wallet.channel, 'the page opened a channel');
    const ledger = await api(base, `/api/v1/channels/${wallet.channel}`, { token: wallet.token });
    const meterSpent = await viewer.locator('sw-player [data-meter=spent]').getAttribute('data-base-units');
    assert.equal(meterSpent, ledger.redeemed, 'the meter shows what the ledger redeemed');
    assert.ok(BigInt(ledger.redeemed) >= 10_000n, `paid for 10+ s at 1000 units/s (${ledger.redeemed})`);
    assert.equal(await viewer.locator('sw-player [data-meter=left]').getAttribute('data-base-units'), (BigInt(ledger.deposit) - BigInt(ledger.redeemed)).toString());
    await viewer.waitForTimeout(3000);
    const later = await api(base, `/api/v1/channels/${wallet.channel}`, { token: wallet.token });
    assert.equal(later.redeemed, ledger.redeemed, 'nothing is paid while paused');

    // 4. The creator's studio: the same earnings as the ledger; chat and tip arrive.
    const studio = await newPage(1440, 1000);
    await studio.goto(`${base}/studio?stream=${stream.id}#demo-key=${creatorKey}`);
    const stats = await api(base, `/api/v1/streams/${stream.id}/stats`, { token: creatorToken });
    assert.equal(stats.gross, ledger.redeemed, 'statistics count what the channel redeemed');
    await studio.locator(`sw-earnings [data-earnings=gross][data-base-units="${ledger.redeemed}"]`).waitFor({ timeout: 15_000 });
    const balances = await api(base, `/api/v1/accounts/${payee}/balances`, { token: creatorToken });
    await studio.locator(`sw-earnings [data-earnings=earned][data-base-units="${balances.earned}"]`).waitFor({ timeout: 15_000 });
    // Voucher shares plus the tip's share (500000 less the 3% fee).
    assert.equal(BigInt(balances.earned), BigInt(stats.net) + 485_000n);
    await studio.locator('sw-chat li', { hasText: 'hello from the viewer' }).waitFor({ timeout: 10_000 });
    await studio.locator('sw-chat [data-tip="500000"]').waitFor({ timeout: 10_000 });
    await studio.locator('sw-earnings [data-earnings=tips][data-base-units="500000"]').waitFor({ timeout: 15_000 });
    await studio.locator('sw-earnings [data-earnings=tips-net][data-base-units="485000"]').waitFor();
    await studio.locator('sw-player video').waitFor();
    await studio.waitForTimeout(2000);
    await studio.screenshot({ path: join(results, 'studio.png') });

    // 5. The viewer's account page: balances match the ledger.
    await viewer.goto(`${base}/account`);
    const viewerBalances = await api(base, `/api/v1/accounts/${wallet.address}/balances`, { token: wallet.token });
    await viewer.locator(`[data-balance=available][data-base-units="${viewerBalances.available}"]`).waitFor({ timeout: 10_000 });
    await viewer.locator(`[data-balance=escrowed][data-base-units="${viewerBalances.escrowed}"]`).waitFor();
    await viewer.locator('table tr', { hasText: 'tip' }).first().waitFor();
    await viewer.screenshot({ path: join(results, 'account.png') });

    // 6. Another viewer sets a cap of 0.003 USDC (3 s): playback stops and says why.
    const capped = await newPage();
    await capped.goto(`${base}/watch/${stream.id}`);
    await capped.locator('sw-player [data-action=demo-wallet]').click();
    await capped.locator('sw-player input[name=cap]').fill('0.003', { timeout: 30_000 });
    await capped.locator('sw-player [data-action=start]').click();
    await capped.waitForFunction(() => document.querySelector('sw-player').getAttribute('state') === 'cap', null, { timeout: 60_000, polling: 250 });
    await capped.locator('sw-player .overlay', { hasText: 'Spending cap reached' }).waitFor();
    await capped.waitForFunction(() => {
      const video = document.querySelector('sw-player').shadowRoot.querySelector('video');
      return video.paused || video.readyState < 3;
    }, null, { timeout: 30_000, polling: 250 });
    const stoppedAt = await videoTime(capped);
    await capped.waitForTimeout(2000);
    assert.ok(await videoTime(capped) - stoppedAt < 0.5, 'playback stays stopped');
    const cappedWallet = await pageWallet(capped, payee);
    const cappedChannel = await api(base, `/api/v1/channels/${cappedWallet.channel}`, { token: cappedWallet.token });
    assert.ok(BigInt(cappedChannel.redeemed) <= 3000n, `the cap holds (${cappedChannel.redeemed})`);
    await capped.screenshot({ path: join(results, 'cap.png') });

    // 7. Discovery: both live streams, search and categories.
    const home = await newPage();
    await home.goto(`${base}/`);
    await home.locator(`a.card[data-stream="${stream.id}"]`, { hasText: '0.06 USDC/min' }).waitFor({ timeout: 10_000 });
    await home.locator(`a.card[data-stream="${free.id}"]`).waitFor();
    // Thumbnails: frames of the live streams, made by ffmpeg on the server.
    await home.waitForFunction(() => [...document.querySelectorAll('a.card img')].filter((i) => i.complete && i.naturalWidth === 320).length === 2, null, { timeout: 20_000, polling: 500 });
    await home.screenshot({ path: join(results, 'discover.png') });
    await home.locator('input[name=q]').fill('jazz');
    await home.locator('input[name=q]').press('Enter');
    await home.locator(`a.card[data-stream="${free.id}"]`).waitFor({ state: 'detached', timeout: 10_000 });
    assert.equal(await home.locator('a.card').count(), 1);
    await home.getByRole('link', { name: 'Clear filters' }).click();
    await home.locator('button.chip', { hasText: 'demo' }).click();
    await home.locator(`a.card[data-stream="${free.id}"]`).waitFor({ timeout: 10_000 });
    await home.locator(`a.card[data-stream="${stream.id}"]`).waitFor({ state: 'detached', timeout: 10_000 });

    // A phone-sized watch page.
    const phone = await newPage(390, 844);
    await phone.goto(`${base}/watch/${free.id}`);
    await phone.waitForFunction(() => document.querySelector('sw-player')?.shadowRoot.querySelector('video').currentTime > 1, null, { timeout: 60_000, polling: 500 });
    await phone.screenshot({ path: join(results, 'phone.png') });
    // A free stream counts its viewers by who fetches its playlists.
    assert.ok((await api(base, `/api/v1/streams/${free.id}`)).viewers >= 1, 'the phone watching the free stream is counted');

    // 8. Another site embeds the paid stream with two lines of HTML, and its
    // visitor pays from there (the API answers any origin).
    const embedSite = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!doctype html><title>A fan site</title><h1>Our favourite stream</h1>
<script type="module" src="${base}/assets/streamweave.js"></script>
<sw-player stream="${stream.id}" server="${base}"></sw-player>`);
    });
    await new Promise((resolve) => embedSite.listen(0, '127.0.0.1', resolve));
    try {
      const fan = await newPage();
      await fan.goto(`http://localhost:${embedSite.address().port}/`);
      await fan.locator('sw-player [data-action=demo-wallet]').click();
      await fan.locator('sw-player [data-action=start]').click({ timeout: 30_000 });
      await fan.waitForFunction(() => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime > 4, null, { timeout: 60_000, polling: 500 });
      const fanAuth = await fan.evaluate((key) => JSON.parse(localStorage.getItem(key)), `streamweave.auth:${base}`);
      const fanBalances = await api(base, `/api/v1/accounts/${fanAuth.address}/balances`, { token: fanAuth.token });
      assert.ok(BigInt(fanBalances.escrowed) > 0n, 'the embedded player opened a channel');
      await fan.screenshot({ path: join(results, 'embed.png') });
    } finally {
      embedSite.close();
    }

    // 9. A browser wallet (an EIP-1193 provider, as MetaMask injects; here
    // backed by a key in this test) signs in through SIWE. Its small deposit
    // runs out: the player says so, and a top-up resumes playback.
    const walletAccount = privateKeyToAccount(generatePrivateKey());
    await api(base, '/api/v1/dev/faucet', { method: 'POST', body: { address: walletAccount.address, amount: '5000000' } });
    const injected = await newPage();
    await injected.exposeFunction('testWalletSign', (hex) => walletAccount.signMessage({ message: { raw: hex } }));
    await injected.addInitScript((address) => {
      window.ethereum = {
        async request({ method, params }) {
          if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [address];
          if (method === 'personal_sign') return window.testWalletSign(params[0]);
          throw new Error(`unsupported ${method}`);
        },
        on() {},
        removeListener() {},
      };
    }, walletAccount.address);
    await injected.goto(`${base}/watch/${stream.id}`);
    await injected.locator('sw-player sw-wallet button', { hasText: 'Connect wallet' }).click();
    await injected.locator('sw-player input[name=deposit]').fill('0.008', { timeout: 30_000 });
    await injected.locator('sw-player [data-action=start]').click();
    await injected.waitForFunction(() => document.querySelector('sw-player').getAttribute('state') === 'funds', null, { timeout: 60_000, polling: 250 });
    await injected.locator('sw-player .overlay', { hasText: 'Out of funds' }).waitFor();
    await injected.screenshot({ path: join(results, 'out-of-funds.png') });
    await injected.locator('sw-player .overlay button', { hasText: 'Top up' }).click();
    await injected.waitForFunction(() => document.querySelector('sw-player').getAttribute('state') === 'playing', null, { timeout: 10_000, polling: 250 });
    const resumedAt = await videoTime(injected);
    await injected.waitForFunction((t) => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime > t + 3, resumedAt, { timeout: 60_000, polling: 500 });
    const injectedAuth = await pageWallet(injected, payee);
    assert.equal(injectedAuth.wallet, 'injected');
    assert.equal(injectedAuth.address, walletAccount.address.toLowerCase());
    const toppedUp = await api(base, `/api/v1/channels/${injectedAuth.channel}`, { token: injectedAuth.token });
    assert.equal(toppedUp.deposit, (8000n + 1_800_000n).toString(), 'the deposit plus 30 minutes');

    assert.deepEqual(errors, [], 'no script errors');
  } finally {
    await browser?.close();
    for (const p of publishers) p.kill();
    await stopAndRemove(child, work);
  }
});
