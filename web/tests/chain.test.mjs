// The web player on a server that escrows on chain (anvil, deployed by
// `streamweave chain deploy`): a demo wallet gets test tokens from the dev
// faucet, the page opens its channel on the escrow contract, pays by the
// second as usual, and the server settles on chain what the ledger redeemed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { createPublicClient, http, parseAbi } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { api, freePort, pageAuth, publish, signInNode, startServer, until } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const anvilPath = join(dirname(fileURLToPath(import.meta.url)), '../../contracts/node_modules/.bin/anvil');
const settlerKey = '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d';
const escrowAbi = parseAbi([
  'function channel(bytes32 id) view returns ((address payer, uint64 expiresAt, uint8 state, address payee, uint64 closesAt, address token, address signer, uint128 deposit, uint128 settled, bytes32 policyHash))',
]);

test('the web player opens its channel on chain and the server settles it', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 240_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-webchain-'));
  const port = await freePort();
  const anvil = spawn(anvilPath, ['--port', String(port), '--chain-id', '31337', '--block-time', '1'], { stdio: 'ignore' });
  const rpc = `http://127.0.0.1:${port}`;
  const node = createPublicClient({ transport: http(rpc) });
  let server;
  let publisher;
  let browser;
  try {
    await until('anvil', () => node.getChainId().then(() => true, () => false), 30_000);
    const deployed = JSON.parse(execFileSync(bin, ['chain', 'deploy', '--chain-rpc', rpc]).toString());
    server = await startServer(bin, join(work, 'data'), [
      '--chain-rpc', rpc, '--escrow', deployed.escrow, '--chain-token', deployed.token,
      '--settler-key', settlerKey, '--settle-threshold', '1', '--chain-poll-ms', '250',
    ]);
    const { base, rtmp } = server;
    const config = await api(base, '/api/v1/payments/config');
    assert.equal(config.on_chain, true);
    assert.equal(config.chain_rpc, rpc, 'a dev server offers its node to browsers');

    const creator = privateKeyToAccount(generatePrivateKey());
    const creatorToken = await signInNode(base, creator);
    const stream = await api(base, '/api/v1/streams', {
      method: 'POST', token: creatorToken,
      body: { title: 'Paid on chain', access: 'per_second', price: { amount: '60000', period_seconds: 60 } },
    });
    publisher = publish(rtmp, stream.stream_key, 120, '426x240');

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const page = await (await browser.newContext()).newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/watch/${stream.id}`);
    await page.locator('sw-player [data-action=demo-wallet]').click();
    await page.locator('sw-player [data-action=start]').click({ timeout: 60_000 });
    // Joined near the live edge (LL-HLS): six seconds watched from there.
    const joinedAt = await page.waitForFunction(() => {
      const time = document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime;
      return time > 0 && time;
    }, null, { timeout: 120_000, polling: 250 }).then((handle) => handle.jsonValue());
    await page.waitForFunction((from) => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime > from + 6, joinedAt, { timeout: 120_000, polling: 500 })
      .catch(async (err) => {
        const shown = await page.evaluate(() => document.querySelector('sw-player').shadowRoot.textContent);
        throw new Error(`${err.message}; the player shows: ${shown}; page errors: ${errors.join('; ')}`);
      });
    await page.evaluate(() => document.querySelector('sw-player').shadowRoot.querySelector('video').pause());
    await page.waitForTimeout(2500);

    const auth = await pageAuth(page);
    const saved = await page.evaluate((key) => JSON.parse(localStorage.getItem(key)), `streamweave.channel:${auth.address}:${creator.address.toLowerCase()}`);
    assert.ok(saved?.id, 'the page opened a channel');
    const channel = await api(base, `/api/v1/channels/${saved.id}`, { token: auth.token });
    assert.notEqual(channel.settled_on_chain, null, 'the channel is the escrow\'s');
    assert.ok(BigInt(channel.redeemed) >= 6000n, `paid for 6+ s at 1000 units/s (${channel.redeemed})`);
    // Threshold 1: everything redeemed is settled on chain.
    const onChain = await until('the settlement', async () => {
      const record = await node.readContract({ address: deployed.escrow, abi: escrowAbi, functionName: 'channel', args: [saved.id] });
      return record.settled === BigInt(channel.redeemed) && record;
    });
    assert.equal(onChain.payer.toLowerCase(), auth.address);
    assert.equal(onChain.deposit.toString(), channel.deposit);
    // A top-up from the page goes through the escrow too.
    await page.evaluate(() => document.querySelector('sw-player').payment.topUp(500000n));
    const topped = await api(base, `/api/v1/channels/${saved.id}`, { token: auth.token });
    assert.equal(BigInt(topped.deposit), BigInt(channel.deposit) + 500000n);
    assert.equal((await node.readContract({ address: deployed.escrow, abi: escrowAbi, functionName: 'channel', args: [saved.id] })).deposit, BigInt(topped.deposit));
    assert.deepEqual(errors, []);
  } finally {
    await browser?.close();
    publisher?.kill('SIGKILL');
    server?.child.kill('SIGKILL');
    anvil.kill();
    rmSync(work, { recursive: true, force: true });
  }
});
