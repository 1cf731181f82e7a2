// The escrow on a real node: anvil (from the npm package) with the contracts
// forge built (out/), driven by viem, an independent client. A payer opens a
// channel, a session key signs vouchers with EIP-712 typed data, anyone
// settles, the payee closes, and every credit on chain is checked against
// the spec's split, worked out by hand below.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createPublicClient, createWalletClient, http, encodeAbiParameters, keccak256, parseEventLogs,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { foundry } from 'viem/chains';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules/.bin', name);

function artifact(name) {
  const path = join(root, `out/${name}.sol/${name}.json`);
  if (!existsSync(path)) execFileSync(bin('forge'), ['build'], { cwd: root, stdio: 'inherit' });
  const json = JSON.parse(readFileSync(path, 'utf8'));
  return { abi: json.abi, bytecode: json.bytecode.object };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

// anvil's well-known development keys (accounts 0..4 of its test mnemonic).
const keys = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
];
const [deployer, payer, payee, creator, collaborator] = keys.map((k) => privateKeyToAccount(k));
const platform = privateKeyToAccount('0x' + '0f'.repeat(32));
const sessionKey = privateKeyToAccount('0x' + '5e'.repeat(32));

let anvil;
let publicClient;
let chain;

before(async () => {
  const port = await freePort();
  anvil = spawn(bin('anvil'), ['--port', String(port), '--chain-id', '31337'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`anvil did not start:\n${output}`)), 30_000);
    const onData = (data) => {
      output += data;
      if (output.includes('Listening on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    anvil.stdout.on('data', onData);
    anvil.stderr.on('data', onData);
    anvil.on('exit', (code) => reject(new Error(`anvil exited (${code}):\n${output}`)));
  });
  chain = { ...foundry, rpcUrls: { default: { http: [`http://127.0.0.1:${port}`] } } };
  publicClient = createPublicClient({ chain, transport: http() });
});

after(() => {
  anvil?.kill();
});

function wallet(account) {
  return createWalletClient({ account, chain, transport: http() });
}

async function send(account, address, abi, functionName, args) {
  const { request } = await publicClient.simulateContract({ account, address, abi, functionName, args });
  const hash = await wallet(account).writeContract(request);
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, 'success', `${functionName} succeeded`);
  return receipt;
}

async function deploy(name, args = []) {
  const { abi, bytecode } = artifact(name);
  const hash = await wallet(deployer).deployContract({ abi, bytecode, args });
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  return { abi, address: receipt.contractAddress };
}

test('a channel opened, paid with signed vouchers, settled and closed on anvil', async () => {
  const usdc = await deploy('TestUSDC');
  const escrow = await deploy('StreamWeaveEscrow', [600n]);
  const read = (contract, functionName, args = []) =>
    publicClient.readContract({ address: contract.address, abi: contract.abi, functionName, args });

  assert.equal(await read(usdc, 'decimals'), 6);
  const deposit = 5_000_000n; // 5 USDC
  await send(payer, usdc.address, usdc.abi, 'mint', [payer.address, deposit]);
  await send(payer, usdc.address, usdc.abi, 'approve', [escrow.address, deposit]);

  const policy = {
    feeBps: 300,
    feeRecipient: platform.address,
    recipients: [
      { account: creator.address, share: 2n },
      { account: collaborator.address, share: 1n },
    ],
  };
  const salt = '0x' + '07'.repeat(32);
  const expiresAt = BigInt(Math.floor(Date.now() / 1000) + 86_400);
  const opened = await send(payer, escrow.address, escrow.abi, 'open',
    [payee.address, usdc.address, deposit, salt, sessionKey.address, expiresAt, policy]);

  // The id, derived here from the spec.
  const channelId = keccak256(encodeAbiParameters(
    [{ type: 'address' }, { type: 'address' }, { type: 'address' }, { type: 'bytes32' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }],
    [payer.address, payee.address, usdc.address, salt, sessionKey.address, escrow.address, 31337n],
  ));
  const [openedEvent] = parseEventLogs({ abi: escrow.abi, logs: opened.logs, eventName: 'ChannelOpened' });
  assert.equal(openedEvent.args.channelId, channelId);
  assert.equal(openedEvent.args.deposit, deposit);
  // The policy is bound by keccak256(abi.encode(policy)), which any client can compute.
  const policyHash = keccak256(encodeAbiParameters([{
    type: 'tuple',
    components: [
      { name: 'feeBps', type: 'uint16' },
      { name: 'feeRecipient', type: 'address' },
      { name: 'recipients', type: 'tuple[]', components: [{ name: 'account', type: 'address' }, { name: 'share', type: 'uint64' }] },
    ],
  }], [policy]));
  assert.equal(openedEvent.args.policyHash, policyHash);
  assert.equal((await read(escrow, 'channel', [channelId])).policyHash, policyHash);

  const sign = (cumulativeAmount) => sessionKey.signTypedData({
    domain: { name: 'StreamWeave', version: '1', chainId: 31337, verifyingContract: escrow.address },
    types: { Voucher: [{ name: 'channelId', type: 'bytes32' }, { name: 'cumulativeAmount', type: 'uint128' }] },
    primaryType: 'Voucher',
    message: { channelId, cumulativeAmount },
  });
  const credits = async () => Promise.all(
    [platform, creator, collaborator].map((a) => read(escrow, 'credits', [usdc.address, a.address])),
  );

  // 1 USDC: fee ceil(1000000 * 300 / 10000) = 30000; rest 970000;
  // creator floor(970000 * 2 / 3) = 646666; collaborator floor(970000 / 3) = 323333; 1 unit held.
  await send(deployer, escrow.address, escrow.abi, 'settle', [channelId, 1_000_000n, await sign(1_000_000n), policy]);
  assert.deepEqual(await credits(), [30_000n, 646_666n, 323_333n]);

  // The same voucher again (anyone may submit it): nothing changes.
  await send(collaborator, escrow.address, escrow.abi, 'settle', [channelId, 1_000_000n, await sign(1_000_000n), policy]);
  assert.deepEqual(await credits(), [30_000n, 646_666n, 323_333n]);

  // A high-s copy of a newer voucher is refused (EIP-2 malleability).
  const v2 = await sign(1_234_567n);
  const n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141n;
  const s = BigInt('0x' + v2.slice(66, 130));
  const v = parseInt(v2.slice(130, 132), 16);
  const highS = v2.slice(0, 66) + (n - s).toString(16).padStart(64, '0') + (v === 27 ? '1c' : '1b');
  await assert.rejects(
    publicClient.simulateContract({ account: deployer, address: escrow.address, abi: escrow.abi, functionName: 'settle', args: [channelId, 1_234_567n, highS, policy] }),
    /ECDSAInvalidSignatureS/,
  );

  // 1.234567 USDC: fee ceil(37037.01) = 37038; rest 1197529;
  // creator floor(798352.67) = 798352; collaborator floor(399176.33) = 399176; 1 unit held.
  await send(payee, escrow.address, escrow.abi, 'settle', [channelId, 1_234_567n, v2, policy]);
  assert.deepEqual(await credits(), [37_038n, 798_352n, 399_176n]);

  // The payee closes: the held unit goes to the first recipient and the
  // rest of the deposit back to the payer at once.
  await send(payee, escrow.address, escrow.abi, 'close', [channelId, 0n, '0x', policy]);
  assert.deepEqual(await credits(), [37_038n, 798_353n, 399_176n]);
  assert.equal(await read(usdc, 'balanceOf', [payer.address]), deposit - 1_234_567n);

  // Credits are pulled by their owners.
  await send(creator, escrow.address, escrow.abi, 'withdraw', [usdc.address, creator.address]);
  assert.equal(await read(usdc, 'balanceOf', [creator.address]), 798_353n);
  assert.equal(await read(usdc, 'balanceOf', [escrow.address]), 37_038n + 399_176n);
  assert.equal(await read(escrow, 'owed', [usdc.address]), 37_038n + 399_176n);
});
