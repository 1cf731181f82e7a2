// The server settling on anvil, driven by viem as an outside client would:
// a payer opens a channel on the escrow with the policy the server
// publishes, pays a live stream through the HTTP API (each 402 answered with
// a voucher signed as EIP-712 typed data), the server settles on chain, and
// the creator withdraws there. Balances on chain equal the ledger's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPublicClient, createWalletClient, http, encodeAbiParameters, keccak256 } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { foundry } from 'viem/chains';
import { freePort, startServer, publish, api, call, signInNode, until } from '../../web/tests/support.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = process.env.STREAMWEAVE_BIN;
const skip = !bin && 'set STREAMWEAVE_BIN to run';

function abiOf(name) {
  const path = join(root, `out/${name}.sol/${name}.json`);
  if (!existsSync(path)) execFileSync(join(root, 'node_modules/.bin/forge'), ['build'], { cwd: root, stdio: 'inherit' });
  return JSON.parse(readFileSync(path, 'utf8')).abi;
}

// anvil's development keys: 1 settles for the server, 2 pays, 3 creates.
const settlerKey = '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d';
const payer = privateKeyToAccount('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const creator = privateKeyToAccount('0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6');
const sessionKey = privateKeyToAccount(generatePrivateKey());

let anvil;
let server;
let dataDir;
let publicClient;
let chain;

before(async () => {
  if (skip) return;
  const port = await freePort();
  anvil = spawn(join(root, 'node_modules/.bin/anvil'), ['--port', String(port), '--chain-id', '31337', '--block-time', '1'], { stdio: 'ignore' });
  const rpc = `http://127.0.0.1:${port}`;
  chain = { ...foundry, rpcUrls: { default: { http: [rpc] } } };
  publicClient = createPublicClient({ chain, transport: http() });
  await until('anvil', () => publicClient.getChainId().then(() => true, () => false), 30_000);
  const deployed = JSON.parse(execFileSync(bin, ['chain', 'deploy', '--chain-rpc', rpc, '--settle-window-s', '60']).toString());
  chain.escrow = deployed.escrow;
  chain.token = deployed.token;
  dataDir = mkdtempSync(join(tmpdir(), 'streamweave-chain-'));
  server = await startServer(bin, dataDir, [
    '--chain-rpc', rpc, '--escrow', deployed.escrow, '--chain-token', deployed.token,
    '--settler-key', settlerKey, '--settle-threshold', '1', '--chain-poll-ms', '250',
  ]);
});

after(() => {
  server?.child.kill('SIGKILL');
  anvil?.kill();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function send(account, address, abi, functionName, args) {
  const { request } = await publicClient.simulateContract({ account, address, abi, functionName, args });
  const hash = await createWalletClient({ account, chain, transport: http() }).writeContract(request);
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, 'success', `${functionName} succeeded`);
}

test('viem opens a channel on chain, pays a stream over HTTP, and the creator withdraws on chain', { skip, timeout: 240_000 }, async () => {
  const { base, rtmp } = server;
  const escrowAbi = abiOf('StreamWeaveEscrow');
  const tokenAbi = abiOf('TestUSDC');
  const read = (address, abi, functionName, args = []) => publicClient.readContract({ address, abi, functionName, args });

  const config = await api(base, '/api/v1/payments/config');
  assert.equal(config.on_chain, true);
  assert.equal(config.escrow.toLowerCase(), chain.escrow.toLowerCase());
  assert.equal(config.assets[0].token.toLowerCase(), chain.token.toLowerCase());

  const creatorToken = await signInNode(base, creator);
  const stream = await api(base, '/api/v1/streams', {
    method: 'POST', token: creatorToken,
    body: { title: 'paid on chain', access: 'per_second', price: { amount: '600000', period_seconds: 60 } },
  });
  const ffmpeg = publish(rtmp, stream.stream_key, 40, '426x240');
  try {
    await until('the stream live', async () => (await api(base, `/api/v1/streams/${stream.id}`)).state === 'live');

    // Open on the escrow with the policy the server publishes for the creator.
    const published = await api(base, `/api/v1/payments/policies/${creator.address}`);
    const policy = {
      feeBps: published.fee_bps,
      feeRecipient: published.fee_recipient,
      recipients: published.recipients.map((r) => ({ account: r.account, share: BigInt(r.share) })),
    };
    const policyHash = keccak256(encodeAbiParameters([{
      type: 'tuple',
      components: [
        { name: 'feeBps', type: 'uint16' },
        { name: 'feeRecipient', type: 'address' },
        { name: 'recipients', type: 'tuple[]', components: [{ name: 'account', type: 'address' }, { name: 'share', type: 'uint64' }] },
      ],
    }], [policy]));
    assert.equal(published.policy_hash, policyHash, 'viem hashes the policy as the server does');
    const deposit = 2_000_000n;
    await send(payer, chain.token, tokenAbi, 'mint', [payer.address, deposit]);
    await send(payer, chain.token, tokenAbi, 'approve', [chain.escrow, deposit]);
    const salt = keccak256('0x0abc');
    const expiresAt = BigInt(Math.floor(Date.now() / 1000) + 86_400);
    await send(payer, chain.escrow, escrowAbi, 'open', [creator.address, chain.token, deposit, salt, sessionKey.address, expiresAt, policy]);
    const channelId = keccak256(encodeAbiParameters(
      [{ type: 'address' }, { type: 'address' }, { type: 'address' }, { type: 'bytes32' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }],
      [payer.address, creator.address, chain.token, salt, sessionKey.address, chain.escrow, 31337n],
    ));
    const payerToken = await signInNode(base, payer);
    const channel = await until('the channel in the ledger (final)', async () => {
      const { status, data } = await call(base, `/api/v1/channels/${channelId}`, { token: payerToken });
      return status === 200 && data;
    });
    assert.equal(channel.deposit, deposit.toString());

    // Play through the paid gate, answering each 402 with a voucher.
    const session = await api(base, `/api/v1/streams/${stream.id}/sessions`, { method: 'POST', token: payerToken, body: { channel_id: channelId } });
    const playBase = new URL(session.playback_url, base);
    const master = await (await fetch(playBase)).text();
    const rendition = master.split('\n').find((line) => line && !line.startsWith('#'));
    const playlistUrl = new URL(rendition, playBase);
    const domain = config.eip712_domain;
    const types = { Voucher: [{ name: 'channelId', type: 'bytes32' }, { name: 'cumulativeAmount', type: 'uint128' }] };
    let paid = 0n;
    const fetched = new Set();
    while (fetched.size < 4) {
      const playlist = await (await fetch(playlistUrl)).text();
      for (const uri of playlist.split('\n').filter((line) => line && !line.startsWith('#'))) {
        if (fetched.has(uri) || fetched.size >= 4) continue;
        const url = new URL(uri, playlistUrl);
        for (;;) {
          const res = await fetch(url);
          if (res.ok) { await res.arrayBuffer(); break; }
          assert.equal(res.status, 402, `${uri}: ${res.status}`);
          const problem = await res.json();
          const amount = BigInt(problem.required_amount);
          const signature = await sessionKey.signTypedData({ domain, types, primaryType: 'Voucher', message: { channelId, cumulativeAmount: amount } });
          await api(base, `/api/v1/channels/${channelId}/vouchers`, { method: 'POST', body: { amount: amount.toString(), signature } });
          paid = amount;
        }
        fetched.add(uri);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(paid > 0n, 'paid for what it played');

    // Settled on chain (threshold 1): the escrow holds what the ledger redeemed.
    const redeemed = (await api(base, `/api/v1/channels/${channelId}`, { token: payerToken })).redeemed;
    await until('the settlement', async () => (await read(chain.escrow, escrowAbi, 'channel', [channelId])).settled === BigInt(redeemed));
    const earnedPath = `/api/v1/accounts/${creator.address}/balances`;
    const earned = await until('the ledger to see the settlement', async () => {
      const view = await api(base, `/api/v1/channels/${channelId}`, { token: payerToken });
      return view.settled_on_chain === redeemed && (await api(base, earnedPath, { token: creatorToken })).earned_on_chain;
    });
    const credits = await read(chain.escrow, escrowAbi, 'credits', [chain.token, creator.address]);
    assert.equal(credits.toString(), earned, 'credits on chain = earnings in the ledger');
    assert.ok(credits > 0n);

    // The creator withdraws on chain; the ledger follows.
    const before = await read(chain.token, tokenAbi, 'balanceOf', [creator.address]);
    await send(creator, chain.escrow, escrowAbi, 'withdraw', [chain.token, creator.address]);
    assert.equal(await read(chain.token, tokenAbi, 'balanceOf', [creator.address]), before + credits);
    await until('the withdrawal in the ledger', async () => (await api(base, earnedPath, { token: creatorToken })).earned_on_chain === '0');
    assert.equal(await read(chain.escrow, escrowAbi, 'credits', [chain.token, creator.address]), 0n);
  } finally {
    ffmpeg.kill('SIGKILL');
  }
});
