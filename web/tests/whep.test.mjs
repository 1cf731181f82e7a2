// Watching a browser's WebRTC publish over WHEP, in Chromium: a page
// publishes a canvas whose every frame carries the clock as a barcode
// (WHIP); other pages watch it over WHEP (the publisher's own frames
// forwarded) and over LL-HLS (through the ladder), reading the barcode of
// each displayed frame back; the watch page's player picks WHEP. Then a paid stream: WHEP with a session's id
// pauses at once with a 402 on the data channel and no picture, plays once
// a payer keeps vouchers coming, and the channel pays for what was
// forwarded; the same session then plays over LL-HLS, paid on the same
// channel. Then a members stream: a member of a tier that allows the
// source's picture watches over WHEP, and the frames forwarded count as the
// member's watch time in the pool round's statement. Bad input: no WebRTC
// publisher (409), no session on a paid or members stream (401), not SDP
// (415), an unknown session (404).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { keccak256, toHex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { firstSegment, percentile, publishClockWhip, watchLatency } from './latency.mjs';
import { api, call, signInNode, startServer, until, stopAndRemove } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const types = { Voucher: [{ name: 'channelId', type: 'bytes32' }, { name: 'cumulativeAmount', type: 'uint128' }] };

/** Keeps a session paid up to its prepay window: each round asks for far too much and signs what the 409 allows. */
function payer(base, channel, signer, domain, paidBefore = 0n) {
  let stopped = false;
  let last = paidBefore;
  const done = (async () => {
    while (!stopped) {
      const tooMuch = await call(base, `/api/v1/channels/${channel}/vouchers`, { method: 'POST', body: { amount: '1000000000', signature: '0x' + '00'.repeat(65) } });
      const max = BigInt(tooMuch.data?.max_amount ?? '0');
      if (max > last) {
        const signature = await signer.signTypedData({ domain, types, primaryType: 'Voucher', message: { channelId: channel, cumulativeAmount: max } });
        const accepted = await call(base, `/api/v1/channels/${channel}/vouchers`, { method: 'POST', body: { amount: max.toString(), signature } });
        assert.equal(accepted.status, 200, JSON.stringify(accepted.data));
        last = max;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  return { stop: async () => { stopped = true; await done; return last; } };
}

test('WHEP plays a WebRTC publish with the least delay, meters it on a paid stream, counts a member\'s watch time, and refuses bad offers', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-whep-'));
  const { child, base } = await startServer(bin, join(work, 'data'), ['--pool-round-seconds', '5']);
  let browser;
  const publishers = [];
  try {
    const creator = privateKeyToAccount(generatePrivateKey());
    const creatorToken = await signInNode(base, creator);
    const free = await api(base, '/api/v1/streams', { method: 'POST', token: creatorToken, body: { title: 'Clock over WebRTC', access: 'free' } });
    const freeKey = (await api(base, `/api/v1/streams/${free.id}/key`, { token: creatorToken })).stream_key;

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const publisherPage = await browser.newPage();
    await publisherPage.goto(`${base}/api/v1/streams`);

    // Before anything is published over WebRTC, WHEP has nothing to play.
    const viewer = await browser.newPage();
    await viewer.goto(`${base}/api/v1/streams`);
    const offer = await viewer.evaluate(async () => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      await pc.setLocalDescription(await pc.createOffer());
      const sdp = pc.localDescription.sdp;
      pc.close();
      return sdp;
    });
    const whep = (id, body, headers = {}) => fetch(`${base}/api/v1/streams/${id}/whep`, { method: 'POST', headers: { 'content-type': 'application/sdp', ...headers }, body });
    let res = await whep(free.id, offer);
    assert.equal(res.status, 409, 'no WebRTC publisher yet');
    assert.equal((await res.json()).type, '/problems/not-published-over-webrtc');

    // 1. The free stream, published from a canvas, watched over WHEP and LL-HLS.
    publishers.push(await publishClockWhip(publisherPage, base, free.id, freeKey));
    await until('the stream to be live', async () => (await api(base, `/api/v1/streams/${free.id}`)).state === 'live', 20_000);
    await firstSegment(base, free.id);
    const view = await api(base, `/api/v1/streams/${free.id}`);
    assert.equal(view.whep_url, `/api/v1/streams/${free.id}/whep`, 'the stream says where to watch it over WHEP');
    res = await whep(free.id, offer, {});
    assert.equal(res.status, 201, 'a free stream needs no bearer');
    const location = res.headers.get('location');
    assert.match(location, new RegExp(`^/api/v1/streams/${free.id}/whep/[0-9a-f]{32}$`));
    assert.equal((await fetch(base + location, { method: 'DELETE' })).status, 200, 'the session ends on DELETE');
    assert.equal((await fetch(base + location, { method: 'DELETE' })).status, 404, 'and is gone');
    assert.equal((await whep(free.id, offer, { 'content-type': 'text/plain' })).status, 415);

    const overWhep = await watchLatency(viewer, `${base}/api/v1/streams/${free.id}/whep`, { whep: true, seconds: 6 });
    assert.ok(overWhep.samples.length >= 60, `frames read over WHEP: ${overWhep.samples.length} (unreadable ${overWhep.unreadable})`);
    assert.ok(overWhep.samples.length > 4 * overWhep.unreadable, 'the barcode survives the publisher\'s encoder');
    assert.ok(percentile(overWhep.samples, 50) > 0, 'a frame is shown after it was drawn');
    const overHls = await watchLatency(viewer, `${base}/live/${free.id}/master.m3u8`, { lowLatencyMode: true, seconds: 4 });
    assert.ok(overHls.samples.length >= 30, `frames read over LL-HLS from the WebRTC publish: ${overHls.samples.length}`);
    assert.ok(percentile(overHls.samples, 50) > percentile(overWhep.samples, 50), 'the ladder adds delay that WHEP does not');
    console.log(`WHEP p50 ${Math.round(percentile(overWhep.samples, 50))} ms, LL-HLS p50 ${Math.round(percentile(overHls.samples, 50))} ms`);

    // The watch page plays it over WebRTC.
    const watchPage = await browser.newPage();
    const watchErrors = [];
    watchPage.on('pageerror', (e) => watchErrors.push(e.message));
    watchPage.on('console', (m) => { if (m.type() === 'error') watchErrors.push(m.text()); });
    await watchPage.goto(`${base}/watch/${free.id}`);
    try {
      await watchPage.getByText('Playing over WebRTC: the least delay.').waitFor({ timeout: 20_000 });
    } catch (err) {
      const shown = await watchPage.locator('sw-player').evaluate((el) => [...el.shadowRoot.querySelectorAll('div,p,span,option')].map((e) => e.textContent).filter(Boolean).slice(-12).join(' / '));
      throw new Error(`${err.message}; the player shows: ${shown}; errors: ${watchErrors.join(' | ')}`);
    }
    assert.equal(await watchPage.locator('sw-player select[aria-label=Quality] option').first().textContent(), 'Source (WebRTC)');
    await watchPage.close();

    // 2. A paid stream: 1000 base units a second.
    const paid = await api(base, '/api/v1/streams', { method: 'POST', token: creatorToken, body: { title: 'Paid clock', access: 'per_second', price: { amount: '60000', period_seconds: 60 } } });
    const paidKey = (await api(base, `/api/v1/streams/${paid.id}/key`, { token: creatorToken })).stream_key;
    const paidPublisher = await browser.newPage();
    await paidPublisher.goto(`${base}/api/v1/streams`);
    publishers.push(await publishClockWhip(paidPublisher, base, paid.id, paidKey));
    await until('the paid stream to be live', async () => (await api(base, `/api/v1/streams/${paid.id}`)).state === 'live', 20_000);
    assert.equal((await whep(paid.id, offer)).status, 401, 'a paid stream needs a session');

    const watcher = privateKeyToAccount(generatePrivateKey());
    const watcherToken = await signInNode(base, watcher);
    await api(base, '/api/v1/dev/faucet', { method: 'POST', body: { address: watcher.address, amount: '5000000' } });
    const signer = privateKeyToAccount(generatePrivateKey());
    const channel = await api(base, '/api/v1/channels', { method: 'POST', token: watcherToken, body: { payee: creator.address, deposit: '1000000', signer: signer.address, salt: keccak256(toHex(paid.id)) } });
    const session = await api(base, `/api/v1/streams/${paid.id}/sessions`, { method: 'POST', token: watcherToken, body: { channel_id: channel.id } });
    const config = await api(base, '/api/v1/payments/config');

    // Unpaid: a 402 on the data channel, no picture.
    const unpaid = await watchLatency(viewer, `${base}/api/v1/streams/${paid.id}/whep`, { whep: true, bearer: session.id, seconds: 1, firstFrameWaitMs: 4000 });
    assert.equal(unpaid.samples.length, 0, 'nothing shown before payment');
    const due = unpaid.notices.find((n) => n.notice === 'payment-required');
    assert.ok(due, `a payment-required notice: ${JSON.stringify(unpaid.notices)}`);
    assert.equal(due.problem.status, 402);
    assert.equal(due.problem.channel_id, channel.id);
    assert.equal(due.problem.segment.rendition, 'source');
    assert.ok(BigInt(due.problem.required_amount) > 0n);

    // Paid as it plays: the picture comes, and the channel pays for about what was forwarded.
    const paying = payer(base, channel.id, signer, config.eip712_domain);
    const started = Date.now();
    const watched = await watchLatency(viewer, `${base}/api/v1/streams/${paid.id}/whep`, { whep: true, bearer: session.id, seconds: 5 });
    const elapsedMs = Date.now() - started;
    const paidAmount = await paying.stop();
    assert.ok(watched.samples.length >= 60, `frames read while paying: ${watched.samples.length}`);
    const redeemed = BigInt((await api(base, `/api/v1/channels/${channel.id}`, { token: watcherToken })).redeemed);
    assert.equal(redeemed, paidAmount);
    // 1000 units a second: at least the seconds watched, at most those plus the prepay window (2 segments + slack) and the first wait.
    assert.ok(redeemed >= 4000n, `paid ${redeemed} for 5 s watched`);
    assert.ok(redeemed <= BigInt(Math.ceil(elapsedMs / 1000) + 6) * 1000n, `paid ${redeemed} within ${elapsedMs} ms`);

    // The watch page's player pays for WHEP as it plays (a demo wallet, a channel, vouchers a second ahead).
    const paidPage = await browser.newPage();
    await paidPage.goto(`${base}/watch/${paid.id}`);
    await paidPage.locator('sw-player [data-action=demo-wallet]').click();
    await paidPage.locator('sw-player [data-action=start]').click({ timeout: 30_000 });
    await paidPage.getByText('Playing over WebRTC: the least delay.').waitFor({ timeout: 30_000 });
    await paidPage.waitForFunction(() => document.querySelector('sw-player').shadowRoot.querySelector('video').currentTime > 6, null, { timeout: 30_000, polling: 250 });
    const spent = await paidPage.locator('sw-player [data-meter=session-spent]').getAttribute('data-base-units');
    assert.ok(BigInt(spent) >= 5000n, `the player paid for the seconds it showed: ${spent}`);
    await paidPage.close();

    // The same session over LL-HLS through the ladder, paid the same way.
    const payingAgain = payer(base, channel.id, signer, config.eip712_domain, redeemed);
    const overPaidHls = await watchLatency(viewer, `${base}${session.playback_url}`, { lowLatencyMode: true, seconds: 4 });
    const paidInAll = await payingAgain.stop();
    assert.ok(overPaidHls.samples.length >= 30, `frames read over the paid session's LL-HLS: ${overPaidHls.samples.length}`);
    assert.ok(paidInAll > redeemed, 'HLS is paid on the same channel');

    // 3. A members stream: a member of the creator's 360p tier watches the source (240p) over WHEP, and what was
    // forwarded counts, once, as the member's watch time in the pool's round statement.
    const tier = await api(base, '/api/v1/tiers', { method: 'POST', token: creatorToken, body: { name: 'Clock club', price: '1000', max_height: 360, max_streams: 1 } });
    const members = await api(base, '/api/v1/streams', { method: 'POST', token: creatorToken, body: { title: 'Members clock', access: 'members', tiers: [tier.id] } });
    const membersKey = (await api(base, `/api/v1/streams/${members.id}/key`, { token: creatorToken })).stream_key;
    const membersPublisher = await browser.newPage();
    await membersPublisher.goto(`${base}/api/v1/streams`);
    publishers.push(await publishClockWhip(membersPublisher, base, members.id, membersKey));
    await until('the members stream to be live', async () => (await api(base, `/api/v1/streams/${members.id}`)).state === 'live', 20_000);
    assert.equal((await whep(members.id, offer)).status, 401, 'a members stream needs a session');
    const member = privateKeyToAccount(generatePrivateKey());
    const memberToken = await signInNode(base, member);
    await api(base, '/api/v1/dev/faucet', { method: 'POST', body: { address: member.address, amount: '5000000' } });
    await api(base, '/api/v1/memberships', { method: 'POST', token: memberToken, body: { tier_id: tier.id, auto_renew: false, id: crypto.randomUUID() } });
    const memberSession = await api(base, `/api/v1/streams/${members.id}/sessions`, { method: 'POST', token: memberToken, body: {} });
    assert.equal(memberSession.max_height, 360);
    const memberStarted = Date.now();
    const asMember = await watchLatency(viewer, `${base}/api/v1/streams/${members.id}/whep`, { whep: true, bearer: memberSession.id, seconds: 4 });
    const memberWatchedMs = Date.now() - memberStarted;
    assert.ok(asMember.samples.length >= 30, `frames read as a member over WHEP: ${asMember.samples.length} (notices ${JSON.stringify(asMember.notices)})`);
    // Rounds close every 5 s here; the statement lists each member's served media time per item.
    const servedToMember = async () => {
      let servedMs = 0;
      for (const round of (await api(base, '/api/v1/pool/rounds')).rounds) {
        const statement = await (await fetch(`${base}/ipfs/${round.statement_cid}`)).json();
        for (const w of statement.watched) {
          if (w.member === member.address.toLowerCase() && w.item === members.id) servedMs += w.served_ms;
        }
      }
      return servedMs;
    };
    await until('the member\'s WHEP watch time in a closed round', async () => (await servedToMember()) >= 3000, 30_000);
    const servedMs = await servedToMember();
    assert.ok(servedMs <= memberWatchedMs + 2000, `served ${servedMs} ms in ${memberWatchedMs} ms of watching`);
  } finally {
    for (const publisher of publishers) await publisher.stop().catch(() => {});
    await browser?.close();
    await stopAndRemove(child, work);
  }
});

test('ICE-TCP: with no UDP getting through, a browser publishes over WHIP and watches over WHEP', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 120_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-ice-tcp-'));
  // Every WebRTC UDP datagram dropped: only the TCP candidates connect.
  const { child, base } = await startServer(bin, join(work, 'data'), ['--webrtc-simulated-loss-percent', '100']);
  let browser;
  let publisher;
  try {
    const token = await signInNode(base, privateKeyToAccount(generatePrivateKey()));
    const stream = await api(base, '/api/v1/streams', { method: 'POST', token, body: { title: 'Over TCP', access: 'free' } });
    const key = (await api(base, `/api/v1/streams/${stream.id}/key`, { token })).stream_key;
    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const publisherPage = await browser.newPage();
    await publisherPage.goto(`${base}/api/v1/streams`);
    publisher = await publishClockWhip(publisherPage, base, stream.id, key);
    await until('the stream to be live over TCP', async () => (await api(base, `/api/v1/streams/${stream.id}`)).state === 'live', 30_000);
    const route = await publisherPage.evaluate(async () => {
      const stats = await window.whipPc.getStats();
      const pair = [...stats.values()].find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
      return pair ? stats.get(pair.remoteCandidateId)?.protocol : null;
    });
    assert.equal(route, 'tcp', 'the publisher reached the server over TCP');
    const options = await fetch(`${base}/api/v1/streams/${stream.id}/whep`, { method: 'OPTIONS' });
    assert.equal(options.status, 204);
    assert.equal(options.headers.get('link'), null, 'no ICE servers configured, none offered');
    const viewer = await browser.newPage();
    await viewer.goto(`${base}/api/v1/streams`);
    const watched = await watchLatency(viewer, `${base}/api/v1/streams/${stream.id}/whep`, { whep: true, seconds: 3 });
    assert.ok(watched.samples.length >= 30, `frames read over WHEP on TCP: ${watched.samples.length}`);
  } finally {
    await publisher?.stop().catch(() => {});
    await browser?.close();
    await stopAndRemove(child, work);
  }
});

test('the ICE servers a node is given are offered to WHIP and WHEP peers as Link headers', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 60_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-ice-servers-'));
  const { child, base } = await startServer(bin, join(work, 'data'), [
    '--webrtc-ice-server', 'stun:stun.example:3478', '--webrtc-ice-server', 'turn:turn.example:3478?transport=udp',
    '--webrtc-ice-username', 'alice', '--webrtc-ice-credential', 's3cret']);
  try {
    const token = await signInNode(base, privateKeyToAccount(generatePrivateKey()));
    const stream = await api(base, '/api/v1/streams', { method: 'POST', token, body: { title: 'ICE', access: 'free' } });
    for (const endpoint of ['whip', 'whep']) {
      const res = await fetch(`${base}/api/v1/streams/${stream.id}/${endpoint}`, { method: 'OPTIONS' });
      assert.equal(res.status, 204, endpoint);
      assert.equal(res.headers.get('link'), '<stun:stun.example:3478>; rel="ice-server", <turn:turn.example:3478?transport=udp>; rel="ice-server"; username="alice"; credential="s3cret"; credential-type="password"', endpoint);
    }
  } finally {
    await stopAndRemove(child, work);
  }
});
