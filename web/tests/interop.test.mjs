// Interop: an independent client (viem) against our implementation.
// 1. The shared vectors (crates/ledger/tests/vectors/vouchers.json): viem
//    derives the same channel ids, EIP-712 digests and signatures.
// 2. A live server (STREAMWEAVE_BIN, started here in dev mode): viem signs
//    the SIWE message and vouchers, and the server accepts them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './support.mjs';
import { encodeAbiParameters, hashTypedData, keccak256 } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';

const here = dirname(fileURLToPath(import.meta.url));
const vectors = JSON.parse(readFileSync(join(here, '../../crates/ledger/tests/vectors/vouchers.json'), 'utf8'));
const types = { Voucher: [{ name: 'channelId', type: 'bytes32' }, { name: 'cumulativeAmount', type: 'uint128' }] };

function channelId(v) {
  return keccak256(encodeAbiParameters(
    [{ type: 'address' }, { type: 'address' }, { type: 'address' }, { type: 'bytes32' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }],
    [v.payer, v.payee, v.token, v.salt, v.signer, v.escrow, BigInt(v.chain_id)],
  ));
}

test('viem derives the shared vectors', async () => {
  assert.ok(vectors.vouchers.length >= 4);
  for (const v of vectors.vouchers) {
    assert.equal(channelId(v), v.channel_id);
    const domain = { name: 'StreamWeave', version: '1', chainId: v.chain_id, verifyingContract: v.escrow };
    const message = { channelId: v.channel_id, cumulativeAmount: BigInt(v.cumulative_amount) };
    assert.equal(hashTypedData({ domain, types, primaryType: 'Voucher', message }), v.digest);
    const account = privateKeyToAccount(v.signer_private_key);
    assert.equal(account.address.toLowerCase(), v.signer);
    // RFC 6979 signatures are deterministic: both sides produce the same bytes.
    assert.equal(await account.signTypedData({ domain, types, primaryType: 'Voucher', message }), v.signature);
  }
});

test('a live server accepts viem sign-in and vouchers', { skip: !process.env.STREAMWEAVE_BIN && 'set STREAMWEAVE_BIN to run' }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'streamweave-interop-'));
  const { child, base } = await startServer(process.env.STREAMWEAVE_BIN, dataDir);
  try {
    const post = async (path, body, token) => {
      const res = await fetch(base + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    const payer = privateKeyToAccount(generatePrivateKey());
    const session = privateKeyToAccount(generatePrivateKey());
    const creator = privateKeyToAccount(generatePrivateKey());
    // SIWE with viem's personal_sign.
    const challenge = await post('/api/v1/auth/challenge', { address: payer.address });
    assert.equal(challenge.status, 200);
    const signature = await payer.signMessage({ message: challenge.body.message });
    const login = await post('/api/v1/auth/login', { message: challenge.body.message, signature });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const token = login.body.token;
    assert.equal((await post('/api/v1/dev/faucet', { address: payer.address, amount: '5000000' })).status, 200);
    const config = await (await fetch(`${base}/api/v1/payments/config`)).json();
    const salt = keccak256('0x1234');
    const opened = await post('/api/v1/channels', { payee: creator.address, deposit: '1000000', signer: session.address, salt }, token);
    assert.equal(opened.status, 201, JSON.stringify(opened.body));
    const id = channelId({ payer: payer.address, payee: creator.address, token: '0x0000000000000000000000000000000000000000', salt, signer: session.address, escrow: config.escrow, chain_id: config.chain_id });
    assert.equal(opened.body.id, id, 'the channel id viem computes is the server\'s');
    const domain = { ...config.eip712_domain };
    for (const amount of [50000n, 100000n]) {
      const sig = await session.signTypedData({ domain, types, primaryType: 'Voucher', message: { channelId: id, cumulativeAmount: amount } });
      const accepted = await post(`/api/v1/channels/${id}/vouchers`, { amount: amount.toString(), signature: sig });
      assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
      assert.equal(accepted.body.channel.redeemed, amount.toString());
    }
  } finally {
    child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
});
