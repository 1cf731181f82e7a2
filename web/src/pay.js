// Paying for a stream from the browser (spec/payments.md): a channel to the
// creator with a session signer key kept in this browser, a viewing session,
// and EIP-712 vouchers signed after checking each amount against the
// advertised price, the time watched and the viewer's cap.
import {
  createPublicClient, createWalletClient, custom, defineChain, encodeAbiParameters, http, keccak256, parseAbi, toHex,
} from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { ApiError, authed, demoAccount, owedFor, paymentsConfig, request } from './api.js';

/** The calls a payer makes on the escrow and its token (contracts/src). */
const CHAIN_ABI = parseAbi([
  'function approve(address spender, uint256 amount) returns (bool)',
  'function open(address payee, address token, uint128 deposit, bytes32 salt, address signer, uint64 expiresAt, (uint16 feeBps, address feeRecipient, (address account, uint64 share)[] recipients) policy) returns (bytes32)',
  'function topUp(bytes32 id, uint128 amount)',
]);
/** How long a channel opened on chain may take to reach the server's ledger. */
const CHAIN_CHANNEL_WAIT_MS = 120_000;

const VOUCHER_TYPES = {
  Voucher: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'cumulativeAmount', type: 'uint128' },
  ],
};

/** Why a payment was not made. `reason`: cap | funds | price | closed. */
export class PaymentStopped extends Error {
  constructor(reason, message, details = {}) {
    super(message);
    this.reason = reason;
    this.details = details;
  }
}

function channelKey(base, address, payee) {
  return `streamweave.channel:${base ? `${base}:` : ''}${address}:${payee}`;
}

function randomSalt() {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  return keccak256(toHex(bytes));
}

/**
 * One viewer paying one paid stream. `onChange(snapshot)` hears every
 * change of the meter: {channel, paidFrom, spent, deposit, redeemed, cap}.
 */
export class StreamPayment {
  constructor({ stream, auth, deposit, cap, base = '', onChange = () => {} }) {
    this.base = base;
    this.stream = stream;
    this.auth = auth;
    this.depositWanted = BigInt(deposit);
    this.cap = cap == null ? null : BigInt(cap);
    this.onChange = onChange;
    this.queue = Promise.resolve();
    this.startedAt = 0;
    this.aheadOf = -1;
  }

  /** Opens (or reuses) the channel and starts a session; answers the session. */
  async start() {
    this.config = await paymentsConfig(this.base);
    await this.ensureChannel();
    const body = { channel_id: this.channel.id };
    if (this.cap != null) body.max_spend = this.cap.toString();
    this.session = await this.authed(`/api/v1/streams/${this.stream.id}/sessions`, { method: 'POST', body });
    this.paidFrom = BigInt(this.session.paid_from);
    this.price = this.session.price;
    this.startedAt = performance.now();
    this.emit();
    return this.session;
  }

  async ensureChannel() {
    const key = channelKey(this.base, this.auth.address, this.stream.owner);
    const saved = JSON.parse(localStorage.getItem(key) || 'null');
    if (saved) {
      try {
        const channel = await this.authed(`/api/v1/channels/${saved.id}`);
        const left = BigInt(channel.deposit) - BigInt(channel.redeemed);
        const expiresIn = Date.parse(channel.expires_at) - Date.now();
        if (channel.state === 'open' && left > 0n && expiresIn > 10 * 60_000) {
          this.channel = channel;
          this.signer = privateKeyToAccount(saved.signer_key);
          return;
        }
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404) throw err;
      }
    }
    const signerKey = generatePrivateKey();
    const signer = privateKeyToAccount(signerKey);
    const channel = this.config.on_chain
      ? await this.openOnChain(signer.address)
      : await this.authed('/api/v1/channels', {
        method: 'POST',
        body: { payee: this.stream.owner, deposit: this.depositWanted.toString(), signer: signer.address, salt: randomSalt() },
      });
    localStorage.setItem(key, JSON.stringify({ id: channel.id, signer_key: signerKey }));
    this.channel = channel;
    this.signer = signer;
  }

  /**
   * Opens the channel on the escrow contract from the signed-in wallet (the
   * demo wallet's key, or the browser's wallet): approves the deposit, opens
   * with the policy the server publishes for the creator, and waits until
   * the server's ledger has it (once final). Answers the channel.
   */
  async openOnChain(signerAddress) {
    const config = this.config;
    const { wallet, send } = this.chainWallet();
    const payer = wallet.account.address;
    const token = config.assets[0].token;
    const published = await request(`/api/v1/payments/policies/${this.stream.owner}`, { base: this.base });
    const policy = {
      feeBps: published.fee_bps,
      feeRecipient: published.fee_recipient,
      recipients: published.recipients.map((r) => ({ account: r.account, share: BigInt(r.share) })),
    };
    const salt = randomSalt();
    const expiresAt = BigInt(Math.floor(Date.now() / 1000) + 24 * 3600);
    await send(token, 'approve', [config.escrow, this.depositWanted]);
    await send(config.escrow, 'open', [this.stream.owner, token, this.depositWanted, salt, signerAddress, expiresAt, policy]);
    // The id, as the escrow computes it (spec: Channels).
    const id = keccak256(encodeAbiParameters(
      [{ type: 'address' }, { type: 'address' }, { type: 'address' }, { type: 'bytes32' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }],
      [payer, this.stream.owner, token, salt, signerAddress, config.escrow, BigInt(config.chain_id)],
    ));
    const deadline = Date.now() + CHAIN_CHANNEL_WAIT_MS;
    for (;;) {
      try {
        return await this.authed(`/api/v1/channels/${id}`);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404 || Date.now() > deadline) throw err;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** The signed-in wallet on the server's chain, and a way to send calls there. */
  chainWallet() {
    const config = this.config;
    if (!config.chain_rpc) {
      throw new PaymentStopped('chain', 'This server\'s channels open on chain, and it names no node for browsers to reach it.');
    }
    const chain = defineChain({
      id: config.chain_id,
      name: `chain ${config.chain_id}`,
      nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
      rpcUrls: { default: { http: [config.chain_rpc] } },
    });
    const wallet = this.auth.wallet === 'demo'
      ? createWalletClient({ account: demoAccount(), chain, transport: http(config.chain_rpc) })
      : createWalletClient({ account: this.auth.address, chain, transport: custom(globalThis.ethereum) });
    const node = createPublicClient({ chain, transport: http(config.chain_rpc) });
    const send = async (address, functionName, args) => {
      const hash = await wallet.writeContract({ address, abi: CHAIN_ABI, functionName, args });
      const receipt = await node.waitForTransactionReceipt({ hash });
      if (receipt.status !== 'success') throw new Error(`${functionName} failed on chain`);
    };
    return { wallet, send };
  }

  /** Waits until the server's ledger shows the channel's deposit at `atLeast` (its log final). */
  async channelWithDeposit(atLeast) {
    const deadline = Date.now() + CHAIN_CHANNEL_WAIT_MS;
    for (;;) {
      const channel = await this.authed(`/api/v1/channels/${this.channel.id}`);
      if (BigInt(channel.deposit) >= atLeast) return channel;
      if (Date.now() > deadline) throw new Error('the top-up did not reach the server in time');
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  authed(path, options = {}) {
    return authed(path, { ...options, base: this.base });
  }

  snapshot() {
    const redeemed = BigInt(this.channel?.redeemed ?? 0);
    return {
      channel: this.channel,
      price: this.price,
      paidFrom: this.paidFrom ?? 0n,
      redeemed,
      deposit: BigInt(this.channel?.deposit ?? 0),
      spent: redeemed - (this.paidFrom ?? 0n),
      cap: this.cap,
    };
  }

  emit() {
    this.onChange(this.snapshot());
  }

  /**
   * The most a server may ask now: the price of the time since the session
   * began, plus the segments a player buffers when it joins (three behind
   * the live edge), the prepay window (two) and one of slack; past the free
   * preview. A server asking more is refused.
   */
  ceiling(segmentMs) {
    const elapsed = performance.now() - this.startedAt;
    const preview = (this.session?.preview_seconds ?? 0) * 1000;
    return this.paidFrom + owedFor(this.price, Math.max(0, elapsed + 6 * segmentMs - preview));
  }

  /** Answers a 402 problem: checks, signs and submits; resolves once paid. */
  answer(problem) {
    return this.serialize(() => this.payRequired(problem));
  }

  async payRequired(problem) {
    if (String(problem.type).endsWith('/spending-cap-reached')) {
      throw new PaymentStopped('cap', 'Spending cap reached: this session has spent all you allowed.', problem);
    }
    const required = BigInt(problem.required_amount);
    if (required <= BigInt(this.channel.redeemed)) return; // paid meanwhile
    const advertised = this.stream.price;
    if (problem.price && (problem.price.amount !== advertised.amount || problem.price.period_seconds !== advertised.period_seconds)) {
      throw new PaymentStopped('price', 'The server asked a different price than the stream advertises: not paying.');
    }
    const segmentMs = problem.segment?.duration_ms ?? 2000;
    if (required > this.ceiling(segmentMs)) {
      throw new PaymentStopped('price', 'The server asked for more than the time watched costs: not paying.');
    }
    this.checkLimits(required);
    await this.sign(required);
  }

  checkLimits(amount) {
    if (this.cap != null && amount - this.paidFrom > this.cap) {
      throw new PaymentStopped('cap', 'Spending cap reached: this session has spent all you allowed.');
    }
    if (amount > BigInt(this.channel.deposit)) {
      throw new PaymentStopped('funds', 'The channel\'s deposit is used up: top it up to keep watching.');
    }
  }

  /** After a segment played without a 402: pay for the next one ahead of time. */
  payAhead(segmentMs, sequence) {
    // Audio and video segments of one position are paid once: once ahead each.
    if (sequence <= this.aheadOf) return Promise.resolve();
    this.aheadOf = sequence;
    return this.serialize(async () => {
      if (!this.channel || !this.price) return;
      const redeemed = BigInt(this.channel.redeemed);
      let target = redeemed + owedFor(this.price, segmentMs);
      target = target < this.ceiling(segmentMs) ? target : this.ceiling(segmentMs);
      if (this.cap != null && target - this.paidFrom > this.cap) target = this.paidFrom + this.cap;
      const deposit = BigInt(this.channel.deposit);
      if (target > deposit) target = deposit;
      if (target <= redeemed) return;
      try {
        await this.sign(target);
      } catch (err) {
        // Beyond the server's prepay window: it will ask with a 402 instead.
        if (!(err instanceof ApiError) || err.status !== 409) throw err;
      }
    });
  }

  async sign(amount) {
    const domain = { ...this.config.eip712_domain };
    const signature = await this.signer.signTypedData({
      domain,
      types: VOUCHER_TYPES,
      primaryType: 'Voucher',
      message: { channelId: this.channel.id, cumulativeAmount: amount },
    });
    const accepted = await this.authed(`/api/v1/channels/${this.channel.id}/vouchers`, {
      method: 'POST',
      body: { amount: amount.toString(), signature },
    });
    this.channel = accepted.channel;
    this.emit();
  }

  /** Adds `amount` to the channel's deposit (from the available balance, or on chain). */
  topUp(amount) {
    return this.serialize(async () => {
      if (this.config.on_chain) {
        const { send } = this.chainWallet();
        const wanted = BigInt(this.channel.deposit) + BigInt(amount);
        await send(this.config.assets[0].token, 'approve', [this.config.escrow, BigInt(amount)]);
        await send(this.config.escrow, 'topUp', [this.channel.id, BigInt(amount)]);
        this.channel = await this.channelWithDeposit(wanted);
      } else {
        this.channel = await this.authed(`/api/v1/channels/${this.channel.id}/topup`, { method: 'POST', body: { amount: amount.toString() } });
      }
      this.emit();
    });
  }

  async end() {
    if (!this.session) return;
    try { await this.authed(`/api/v1/sessions/${this.session.id}`, { method: 'DELETE' }); } catch { /* gone already */ }
  }

  serialize(fn) {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }
}
