// Events in a real browser (Debian's Chromium via playwright-core, against
// the real binary): a creator schedules a ticketed show; a viewer with a
// demo wallet buys a ticket on the event page, watches the show in the room
// when the creator goes live (ffmpeg over RTMP), and tips past a rival to the
// top of the live leaderboard. A visitor without a ticket sees the
// ticket-required panel and gets no playback. The creator ends the show and
// finalizes it: the viewer's page then shows the collectible they hold, the
// studio shows the ticket money (sales, refunds, released) as the ledger has
// it, and the viewer resells the collectible on the market.
// Screenshots land in web/test-results/ (events.png, event-room.png, collectible.png).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { api, call, pageAuth, publish, signInNode, startServer, until, videoTime, stopAndRemove } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const results = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results');


test('a viewer buys a ticket, watches the room, tops the leaderboard and gets the collectible; no ticket, no playback', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-events-'));
  const { child, base, rtmp } = await startServer(bin, join(work, 'data'));
  let publisher;
  let browser;
  try {
    // The creator schedules a show starting now (their key signs in from Node).
    const creatorKey = generatePrivateKey();
    const creator = privateKeyToAccount(creatorKey);
    const creatorToken = await signInNode(base, creator);
    const now = Date.now();
    const created = await call(base, '/api/v1/events', {
      method: 'POST', token: creatorToken,
      body: {
        title: 'Midnight Synth Session', description: 'A live set for ticket holders.', category: 'music',
        starts_at: new Date(now).toISOString(), duration_seconds: 300, royalty_bps: 500,
        ticket: { price: '1000000', supply: 10, per_wallet: 2, sale_ends_at: new Date(now + 240_000).toISOString(), resale_max_bps: 15000 },
      },
    });
    assert.equal(created.status, 201, `event created: ${JSON.stringify(created.data)}`);
    const event = created.data;
    assert.ok(event.stream_key, 'the creator sees the event\'s stream key');
    assert.equal(event.state, 'scheduled');
    assert.equal(event.tickets_left, 10);
    // And another show tomorrow, for the countdown.
    const later = await api(base, '/api/v1/events', {
      method: 'POST', token: creatorToken,
      body: { title: 'Sunday Jazz Brunch', starts_at: new Date(now + 26 * 3_600_000).toISOString(), duration_seconds: 3600, ticket: { price: '2500000', supply: 50 } },
    });

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const errors = [];
    const newPage = async (width = 1360, height = 950) => {
      const context = await browser.newContext({ viewport: { width, height } });
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      return page;
    };
    mkdirSync(results, { recursive: true });

    // 1. The viewer finds the show on /events, signs in with a demo wallet and buys a ticket.
    const viewer = await newPage();
    await viewer.goto(`${base}/events`);
    const card = viewer.locator(`a.card[data-event="${event.id}"]`);
    await card.waitFor({ timeout: 15_000 });
    assert.match(await card.innerText(), /1\.00 USDC a ticket/);
    await card.click();
    await viewer.waitForURL(`${base}/events/${event.id}`);
    await viewer.locator('h1', { hasText: 'Midnight Synth Session' }).waitFor();
    await viewer.locator('sw-wallet [data-action=demo-wallet]').first().click();
    await viewer.locator('[data-action=buy-ticket]').first().waitFor({ timeout: 20_000 });
    await viewer.locator('input[name=quantity]').first().fill('1');
    await viewer.locator('[data-action=buy-ticket]').first().click();
    await viewer.locator('[data-tickets-held="1"]').waitFor({ timeout: 15_000 });
    const viewerAuth = await pageAuth(viewer);
    const held = await api(base, `/api/v1/accounts/${viewerAuth.address}/tickets`, { token: viewerAuth.token });
    const mine = held.tickets.filter((t) => t.event_id === event.id);
    assert.equal(mine.length, 1, 'the ledger of tickets has the one bought on the page');
    assert.equal(mine[0].price_paid, '1000000');
    assert.equal((await api(base, `/api/v1/events/${event.id}`)).tickets_sold, 1);
    // With a ticket, the room is open (waiting for the show).
    await viewer.locator('[data-room] sw-player').waitFor({ timeout: 10_000 });

    // A rival fan (from Node) buys a ticket too.
    const rival = privateKeyToAccount(generatePrivateKey());
    await api(base, '/api/v1/dev/faucet', { method: 'POST', body: { address: rival.address, amount: '10000000' } });
    const rivalToken = await signInNode(base, rival);
    const rivalTickets = await call(base, `/api/v1/events/${event.id}/tickets`, { method: 'POST', token: rivalToken, body: { quantity: 1, id: randomUUID() } });
    assert.equal(rivalTickets.status, 201, JSON.stringify(rivalTickets.data));

    // 2. The creator goes live on the event's stream; the viewer watches in the room.
    publisher = publish(rtmp, event.stream_key, 240);
    await viewer.waitForFunction(() => document.querySelector('sw-player')?.shadowRoot.querySelector('video')?.currentTime > 3, null, { timeout: 90_000, polling: 500 })
      .catch(async (err) => {
        await viewer.screenshot({ path: join(results, 'event-room-failed.png') });
        const player = await viewer.evaluate(() => {
          const p = document.querySelector('sw-player');
          return p && { state: p.getAttribute('state'), status: p.shadowRoot.querySelector('[data-status]')?.textContent, overlay: p.shadowRoot.querySelector('.overlay')?.textContent };
        });
        throw new Error(`the room did not play: ${JSON.stringify(player)} (${err.message})`);
      });
    const t1 = await videoTime(viewer);
    await viewer.waitForTimeout(3000);
    const t2 = await videoTime(viewer);
    assert.ok(t2 > t1 + 1, `the room's video plays on (${t1} -> ${t2})`);
    assert.equal(await viewer.locator('sw-player').getAttribute('state'), 'playing');
    await until('the event to be live', async () => (await api(base, `/api/v1/events/${event.id}`)).state === 'live', 30_000);

    // 3. The rival tips first; the viewer tips more from the page and tops the leaderboard.
    const rivalAddress = rival.address.toLowerCase();
    const rivalTip = await call(base, `/api/v1/streams/${event.stream_id}/tips`, { method: 'POST', token: rivalToken, body: { amount: '1000000', id: randomUUID() } });
    assert.ok(rivalTip.status >= 200 && rivalTip.status < 300, `the rival's tip: ${rivalTip.status} ${JSON.stringify(rivalTip.data)}`);
    await viewer.locator(`sw-leaderboard li[data-rank="1"][data-tipper="${rivalAddress}"]`).waitFor({ timeout: 15_000 });
    await viewer.locator('sw-tip select[name=amount]').selectOption('5.00');
    await viewer.locator('sw-tip input[name=tip-message]').fill('for the top spot');
    await viewer.locator('sw-tip button[type=submit]').click();
    await viewer.locator('sw-tip [role=status]', { hasText: 'Sent 5.00 USDC' }).waitFor({ timeout: 10_000 });
    await viewer.locator(`sw-leaderboard li[data-rank="1"][data-tipper="${viewerAuth.address}"][data-total="5000000"]`).waitFor({ timeout: 15_000 });
    await viewer.locator(`sw-leaderboard li[data-rank="2"][data-tipper="${rivalAddress}"]`).waitFor({ timeout: 5_000 });
    assert.match(await viewer.locator('sw-leaderboard li').first().innerText(), /\(you\)/);
    const board = await api(base, `/api/v1/events/${event.id}/leaderboard`);
    assert.equal(board.standings[0].tipper.toLowerCase(), viewerAuth.address);
    assert.equal(board.standings[0].total, '5000000');
    await viewer.locator('sw-chat li', { hasText: 'for the top spot' }).waitFor({ timeout: 10_000 });
    await viewer.screenshot({ path: join(results, 'event-room.png') });

    // 4. A visitor without a ticket, during the show: /events lists it live;
    // its page shows the ticket-required panel and plays nothing.
    const visitor = await newPage();
    const played = [];
    visitor.on('request', (req) => { if (/\/play\/|\.m3u8|\.m4s|\/sessions$/.test(new URL(req.url()).pathname)) played.push(req.url()); });
    await visitor.goto(`${base}/events`);
    await visitor.locator(`[data-events=live] a.card[data-event="${event.id}"]`).waitFor({ timeout: 15_000 });
    // The upcoming show counts down, live.
    const countdown = visitor.locator(`[data-events=upcoming] a.card[data-event="${later.id}"] [data-countdown]`);
    const before = await countdown.innerText();
    assert.match(before, /^starts in 1d 01h \d\dm \d\ds$/);
    await visitor.waitForTimeout(2100);
    assert.notEqual(await countdown.innerText(), before, 'the countdown ticks');
    await visitor.waitForTimeout(1500); // the live thumbnail
    await visitor.screenshot({ path: join(results, 'events.png') });
    await visitor.goto(`${base}/events/${event.id}`);
    await visitor.locator('sw-wallet [data-action=demo-wallet]').first().click();
    const gate = visitor.locator('[data-ticket-required]');
    await gate.waitFor({ timeout: 15_000 });
    assert.match(await gate.innerText(), /You need a ticket/);
    await gate.locator('[data-action=buy-ticket]').waitFor();
    await visitor.waitForTimeout(3000);
    assert.equal(await visitor.locator('sw-player').count(), 0, 'no player without a ticket');
    assert.equal(await visitor.locator('[data-room]').count(), 0, 'no room without a ticket');
    assert.deepEqual(played, [], 'no session or media requested without a ticket');
    const visitorAuth = await pageAuth(visitor);
    const refused = await call(base, `/api/v1/streams/${event.stream_id}/sessions`, { method: 'POST', token: visitorAuth.token, body: {} });
    assert.equal(refused.status, 403, `a session without a ticket: ${refused.status} ${JSON.stringify(refused.data)}`);
    assert.match(String(refused.data?.type), /ticket-required$/);
    // The ticket holder does get a session (the room's own request, repeated from Node).
    const allowed = await call(base, `/api/v1/streams/${event.stream_id}/sessions`, { method: 'POST', token: viewerAuth.token, body: {} });
    assert.equal(allowed.status, 201, JSON.stringify(allowed.data));
    assert.ok(allowed.data.playback_url, 'a ticket session has a playback URL');

    // 5. The creator ends the show and finalizes it.
    publisher.kill('SIGINT');
    await until('the event to end', async () => ['ended', 'finalized'].includes((await api(base, `/api/v1/events/${event.id}`)).state), 60_000);
    const finalized = await call(base, `/api/v1/events/${event.id}/finalize`, { method: 'POST', token: creatorToken });
    assert.equal(finalized.status, 200, `finalize: ${JSON.stringify(finalized.data)}`);
    assert.equal(finalized.data.state, 'finalized');
    assert.ok(finalized.data.collectible_id, 'a collectible was minted');
    const collectible = await api(base, `/api/v1/collectibles/${finalized.data.collectible_id}`);
    assert.equal(collectible.owner.toLowerCase(), viewerAuth.address, 'the top tipper holds the collectible');

    // 6. The viewer's page shows the collectible they hold, and the final leaderboard.
    const held1 = viewer.locator(`[data-collectible="${collectible.id}"][data-collectible-owner="${viewerAuth.address}"]`);
    await held1.waitFor({ timeout: 20_000 });
    assert.match(await held1.innerText(), /You hold this collectible/);
    await viewer.locator(`[data-collectible="${collectible.id}"] a[href="/ipfs/${collectible.metadata_cid}"]`).waitFor();
    await viewer.locator('sw-leaderboard[data-frozen=true]').waitFor({ timeout: 15_000 });
    await viewer.locator(`sw-leaderboard li[data-rank="1"][data-tipper="${viewerAuth.address}"]`).waitFor();
    const metadata = await call(base, `/ipfs/${collectible.metadata_cid}`);
    assert.equal(metadata.status, 200, 'the metadata link resolves');
    await viewer.screenshot({ path: join(results, 'collectible.png') });

    // The account page lists the ticket and the collectible.
    await viewer.goto(`${base}/account`);
    await viewer.locator(`[data-account-tickets] tr[data-ticket="${mine[0].id}"]`).waitFor({ timeout: 15_000 });
    await viewer.locator(`[data-account-collectibles] [data-collectible="${collectible.id}"]`).waitFor({ timeout: 15_000 });

    // The creator's studio: the event's sales and refunds after finalization, as the ledger has them.
    const sold = await api(base, `/api/v1/events/${event.id}/tickets`, { token: creatorToken });
    const refunded = sold.tickets.reduce((sum, t) => sum + BigInt(t.refunded), 0n);
    assert.ok(refunded > 0n, 'a short show refunds part of each ticket');
    const studio = await newPage(1440, 1000);
    await studio.goto(`${base}/studio?event=${event.id}#demo-key=${creatorKey}`);
    const manage = studio.locator(`[data-manage-event="${event.id}"]`);
    await manage.locator('[data-money=gross][data-base-units="2000000"]').waitFor({ timeout: 15_000 });
    await manage.locator(`[data-money=refunded][data-base-units="${refunded}"]`).waitFor({ timeout: 15_000 });
    await manage.locator(`[data-money=released][data-base-units="${finalized.data.released}"]`).waitFor();
    assert.equal(BigInt(finalized.data.released) + refunded, 2_000_000n, 'released and refunded make up what the tickets cost');

    // The market: the viewer lists the collectible; the rival buys it.
    await viewer.goto(`${base}/market?sell=collectible:${collectible.id}`);
    await viewer.locator('input[name=price]').fill('3');
    await viewer.locator('[data-action=list-item]').click();
    const listing = viewer.locator('[aria-label="Open listings"] tr[data-kind=collectible]');
    await listing.locator('[data-action=withdraw-listing]').waitFor({ timeout: 10_000 }).catch(async (err) => {
      throw new Error(`not listed: "${await viewer.locator('[data-market-status]').innerText()}" (${err.message})`);
    });
    assert.equal(await viewer.locator('[data-market-status]').innerText(), 'Listed.');
    const listingId = await listing.getAttribute('data-listing');
    const bought = await api(base, `/api/v1/market/listings/${listingId}/buy`, { method: 'POST', token: rivalToken, body: { id: randomUUID() } });
    assert.equal(bought.sale.price, '3000000');
    assert.equal(BigInt(bought.sale.seller) + BigInt(bought.sale.fee) + BigInt(bought.sale.royalty), 3_000_000n);
    await viewer.reload();
    await viewer.locator(`[aria-label="Your listings"] tr[data-listing="${listingId}"][data-state=sold]`).waitFor({ timeout: 10_000 });
    assert.equal((await api(base, `/api/v1/collectibles/${collectible.id}`)).owner.toLowerCase(), rivalAddress, 'the buyer holds it now');

    assert.deepEqual(errors, [], 'no script errors');
  } finally {
    await browser?.close();
    publisher?.kill();
    await stopAndRemove(child, work);
  }
});
