// The public API as the browser uses it: JSON requests with problem+json
// errors, sign-in (SIWE) with an injected EIP-1193 wallet or a demo wallet,
// and amounts as integers of base units (BigInt; never floating point).
import { createWalletClient, custom } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';

/** An API error: the problem+json body's detail, its status and its type slug. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `the server answered ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.type = String(problem?.type || '').split('/').pop();
  }
}

/** One JSON request; throws ApiError on a non-2xx answer. */
export async function request(path, { method = 'GET', body, token, base = '' } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, { detail: 'the server cannot be reached' });
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// ---- amounts -------------------------------------------------------------

export const DECIMALS = 6;
export const SYMBOL = 'USDC';

/** "1234567" base units -> "1.234567 USDC" (at least two decimals). */
export function formatAmount(units, { symbol = true } = {}) {
  const value = BigInt(units ?? 0);
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const scale = 10n ** BigInt(DECIMALS);
  let fraction = (abs % scale).toString().padStart(DECIMALS, '0').replace(/0+$/, '');
  fraction = fraction.padEnd(2, '0');
  const text = `${negative ? '-' : ''}${abs / scale}.${fraction}`;
  return symbol ? `${text} ${SYMBOL}` : text;
}

/** "0.05" -> 50000n base units; throws on anything but a plain decimal. */
export function parseAmount(text) {
  const clean = String(text).trim();
  const match = /^(\d{0,15})(?:\.(\d*))?$/.exec(clean);
  if (!match || clean === '' || clean === '.') throw new Error(`"${text}" is not an amount`);
  const fraction = match[2] || '';
  if (fraction.length > DECIMALS) throw new Error(`at most ${DECIMALS} decimals`);
  return BigInt(match[1] || '0') * 10n ** BigInt(DECIMALS) + BigInt(fraction.padEnd(DECIMALS, '0') || '0');
}

/** What `ms` of media costs at `price` ({amount, period_seconds}), rounded up (spec "Metering"). */
export function owedFor(price, ms) {
  if (ms <= 0) return 0n;
  const numerator = BigInt(price.amount) * BigInt(Math.ceil(ms));
  const denominator = BigInt(price.period_seconds) * 1000n;
  return (numerator + denominator - 1n) / denominator;
}

/** Whole seconds of media that `units` buy at `price`. */
export function secondsFor(price, units) {
  const amount = BigInt(price.amount);
  if (amount === 0n) return 0n;
  return (BigInt(units) * BigInt(price.period_seconds)) / amount;
}

export function pricePerMinute(price) {
  return owedFor(price, 60_000);
}

/** 65 -> "1:05", 3725 -> "1:02:05" (seconds as a clock). */
export function formatDuration(seconds) {
  const total = Math.max(0, Math.round(Number(seconds) || 0));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = String(total % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${rest}` : `${minutes}:${rest}`;
}

/** A membership period in words: 2592000 -> "30 days", 86400 -> "day", 604800 -> "week". */
export function periodText(seconds) {
  const s = Number(seconds);
  const units = [[31_536_000, 'year'], [604_800, 'week'], [86_400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
  for (const [size, name] of units) {
    if (s % size === 0 && s >= size) return s === size ? name : `${s / size} ${name}s`;
  }
  return `${s} seconds`;
}

export function shortAddress(address) {
  return address ? `${address.slice(0, 6)}…${address.slice(-4)}` : '';
}

// ---- sign-in -------------------------------------------------------------

const DEMO_KEY = 'streamweave.demo-wallet';
const listeners = new Set();

/** Where the sign-in to a server is kept: one per server ('' = this page's). */
function authKey(base) {
  return base ? `streamweave.auth:${base}` : 'streamweave.auth';
}

function storage() {
  try { return globalThis.localStorage ?? null; } catch { return null; }
}

/** The account signed in to a server ('' = this page's): {address, token, expires_at, wallet} or null. */
export function currentAuth(base = '') {
  const raw = storage()?.getItem(authKey(base));
  if (!raw) return null;
  try {
    const auth = JSON.parse(raw);
    if (Date.parse(auth.expires_at) <= Date.now() + 60_000) return null;
    return auth;
  } catch {
    return null;
  }
}

/** Calls `fn(auth)` now and whenever the sign-in to `base` changes (also in other tabs). */
export function onAuth(fn, base = '') {
  const listener = { fn, base };
  listeners.add(listener);
  fn(currentAuth(base));
  return () => listeners.delete(listener);
}

function announce(base) {
  const auth = currentAuth(base);
  for (const listener of listeners) if (listener.base === base) listener.fn(auth);
}
globalThis.window?.addEventListener('storage', (event) => {
  for (const base of new Set([...listeners].map((l) => l.base))) {
    if (event.key === authKey(base)) announce(base);
  }
});

const configs = new Map();
/** `GET /api/v1/payments/config` of a server, fetched once. */
export function paymentsConfig(base = '') {
  if (!configs.has(base)) {
    configs.set(base, request('/api/v1/payments/config', { base }).catch((err) => { configs.delete(base); throw err; }));
  }
  return configs.get(base);
}

/** Whether a server offers a demo wallet (dev servers, which have a faucet). */
export async function demoWalletAvailable(base = '') {
  try { return (await paymentsConfig(base)).faucet === true; } catch { return false; }
}

/** The demo wallet's account: a key made in this browser and kept in localStorage. */
export function demoAccount() {
  const store = storage();
  let key = store?.getItem(DEMO_KEY);
  if (!key) {
    key = generatePrivateKey();
    store?.setItem(DEMO_KEY, key);
  }
  return privateKeyToAccount(key);
}

/** Replaces the demo wallet's key (the demo's creator link hands one over). */
export function importDemoKey(key) {
  const account = privateKeyToAccount(key);
  storage()?.setItem(DEMO_KEY, key);
  return account;
}

/** Amount the demo wallet is topped up to from the faucet on sign-in. */
export const DEMO_FUNDING = 20_000_000n;

/**
 * Signs in through SIWE. `kind` is `demo` (dev servers; funded from the
 * faucet when low) or `injected` (window.ethereum, e.g. MetaMask).
 */
export async function signIn(kind, base = '') {
  let address;
  let signMessage;
  if (kind === 'demo') {
    const account = demoAccount();
    address = account.address;
    signMessage = (message) => account.signMessage({ message });
  } else {
    if (!globalThis.ethereum) throw new Error('no browser wallet found (install one such as MetaMask)');
    const wallet = createWalletClient({ transport: custom(globalThis.ethereum) });
    [address] = await wallet.requestAddresses();
    if (!address) throw new Error('the wallet gave no account');
    signMessage = (message) => wallet.signMessage({ account: address, message });
  }
  const challenge = await request('/api/v1/auth/challenge', { method: 'POST', body: { address }, base });
  const signature = await signMessage(challenge.message);
  const login = await request('/api/v1/auth/login', { method: 'POST', body: { message: challenge.message, signature }, base });
  const auth = { address: login.address.toLowerCase(), token: login.token, expires_at: login.expires_at, wallet: kind };
  storage()?.setItem(authKey(base), JSON.stringify(auth));
  if (kind === 'demo') await fundDemo(auth, base);
  announce(base);
  return auth;
}

/** Tops a demo wallet up from the faucet to DEMO_FUNDING when it runs low. */
export async function fundDemo(auth, base = '') {
  if (!(await demoWalletAvailable(base))) return;
  const balances = await request(`/api/v1/accounts/${auth.address}/balances`, { token: auth.token, base });
  const available = BigInt(balances.available);
  if (available < DEMO_FUNDING / 4n) {
    await request('/api/v1/dev/faucet', { method: 'POST', body: { address: auth.address, amount: (DEMO_FUNDING - available).toString() }, base });
  }
}

export async function signOut(base = '') {
  const auth = currentAuth(base);
  storage()?.removeItem(authKey(base));
  announce(base);
  if (auth) {
    try { await request('/api/v1/auth/logout', { method: 'POST', token: auth.token, base }); } catch { /* already gone */ }
  }
}

/** A request as the account signed in to `options.base`; throws when nobody is. */
export function authed(path, options = {}) {
  const auth = currentAuth(options.base ?? '');
  if (!auth) return Promise.reject(new ApiError(401, { detail: 'sign in first' }));
  return request(path, { ...options, token: auth.token });
}

/**
 * The STUN/TURN servers in a `Link` header (RFC 9725: `<url>; rel="ice-server"; username="..."; credential="..."`),
 * as RTCPeerConnection's `iceServers`.
 */
export function parseIceLinks(header) {
  const servers = [];
  for (const [, url, rest] of (header ?? '').matchAll(/<([^>]+)>([^<]*)/g)) {
    const params = Object.fromEntries([...rest.matchAll(/;\s*([\w-]+)\s*=\s*(?:"([^"]*)"|([^;,\s]*))/g)].map((m) => [m[1].toLowerCase(), m[2] ?? m[3]]));
    if (params.rel !== 'ice-server') continue;
    servers.push(params.username != null ? { urls: url, username: params.username, credential: params.credential ?? '' } : { urls: url });
  }
  return servers;
}

/** The ICE servers a WHIP or WHEP endpoint offers (its `OPTIONS` answer); none when it names none or cannot be asked. */
export async function iceServersOf(url) {
  try {
    return parseIceLinks((await fetch(url, { method: 'OPTIONS' })).headers.get('link'));
  } catch {
    return [];
  }
}
