// The browser's money helpers (web/src/api.js): amounts are BigInt base
// units end to end, parsing refuses anything but plain decimals, and the
// metering formula matches the spec's (owed = ceil(amount * ms / (period * 1000))).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatAmount, owedFor, parseAmount, parseIceLinks, pricePerMinute, secondsFor } from '../src/api.js';

test('amounts format and parse without floating point', () => {
  assert.equal(formatAmount('1234567'), '1.234567 USDC');
  assert.equal(formatAmount(50000n), '0.05 USDC');
  assert.equal(formatAmount('0', { symbol: false }), '0.00');
  assert.equal(formatAmount('340282366920938463463374607431768211455', { symbol: false }), '340282366920938463463374607431768.211455');
  assert.equal(parseAmount('0.05'), 50000n);
  assert.equal(parseAmount('1'), 1000000n);
  assert.equal(parseAmount('.5'), 500000n);
  assert.equal(parseAmount('0.000001'), 1n);
  for (const bad of ['', '.', '-1', '1e3', '0.0000001', 'abc', '1.2.3', ' ']) {
    assert.throws(() => parseAmount(bad), undefined, bad);
  }
  // 0.1 + 0.2 is exactly 0.3 in base units.
  assert.equal(parseAmount('0.1') + parseAmount('0.2'), parseAmount('0.3'));
});

test('metering rounds up like the server', () => {
  const price = { amount: '50000', period_seconds: 60 };
  assert.equal(owedFor(price, 0), 0n);
  assert.equal(owedFor(price, 2000), 1667n); // ceil(50000 * 2000 / 60000)
  assert.equal(owedFor(price, 60_000), 50000n);
  assert.equal(owedFor(price, 1999.2), owedFor(price, 2000), 'fractional ms round up');
  assert.equal(pricePerMinute({ amount: '1', period_seconds: 3600 }), 1n);
  assert.equal(secondsFor(price, 50000n), 60n);
  assert.equal(secondsFor(price, 1667n), 2n);
});

test('ICE servers come out of Link headers as RTCPeerConnection takes them', () => {
  const header = '<stun:stun.example:3478>; rel="ice-server", <turn:turn.example:3478?transport=udp>; rel="ice-server"; username="alice"; credential="s3cret"; credential-type="password", <https://example/next>; rel="next"';
  assert.deepEqual(parseIceLinks(header), [
    { urls: 'stun:stun.example:3478' },
    { urls: 'turn:turn.example:3478?transport=udp', username: 'alice', credential: 's3cret' },
  ]);
  assert.deepEqual(parseIceLinks(null), []);
  assert.deepEqual(parseIceLinks('<turn:t>; rel=ice-server; username=bob; credential=pw'), [{ urls: 'turn:t', username: 'bob', credential: 'pw' }]);
});
