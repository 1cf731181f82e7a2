// Memberships in a real browser (Debian's Chromium via playwright-core,
// against the real binary, pool rounds of 10 s): an admin offers a
// StreamWeave tier at 360p, one stream at once; a creator goes live for
// members (ffmpeg at 854x480, so the ladder has 480p and 360p). A viewer
// with a demo wallet joins on /membership and watches: the quality menu
// stops at the tier's 360p and says why; a second tab of the same viewer
// meets the tier's one-stream limit and ends the other session to watch; an
// expired session (answered 401 session-expired) is replaced by a new one.
// A visitor without a membership sees "Members only" and plays nothing, and
// a renewal that fails for want of balance shows its reason. /membership
// lists the history with resume links; the creator makes a tier in the
// studio and sees the pool's allocations to them, round by round.
// Screenshots land in web/test-results/ (membership.png, member-watch.png,
// member-limit.png, members-only.png, studio-memberships.png, pool-earnings.png).
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
const ADMIN = 'memberships-test';

const playerInfo = (page) => page.evaluate(() => {
  const p = document.querySelector('sw-player');
  return p && { state: p.getAttribute('state'), status: p.shadowRoot.querySelector('[data-status]')?.textContent, overlay: p.shadowRoot.querySelector('.overlay')?.hidden ? '' : p.shadowRoot.querySelector('.overlay')?.textContent };
});

/** Waits until the page's player has played past `seconds` (and says what it shows if not). */
async function playsPast(page, seconds, what, timeout = 90_000) {
  await page.waitForFunction((s) => document.querySelector('sw-player')?.shadowRoot.querySelector('video')?.currentTime > s, seconds, { timeout, polling: 500 })
    .catch(async (err) => {
      await page.screenshot({ path: join(results, 'member-watch-failed.png') });
      throw new Error(`${what} did not play: ${JSON.stringify(await playerInfo(page))} (${err.message})`);
    });
}

/** Records a page's member sessions as the server answered them. */
function recordSessions(page) {
  const sessions = [];
  page.on('response', async (res) => {
    if (res.request().method() === 'POST' && /\/api\/v1\/streams\/[^/]+\/sessions$/.test(new URL(res.url()).pathname)) {
      let body = null;
      try { body = await res.json(); } catch { /* not JSON */ }
      sessions.push({ status: res.status(), body });
    }
  });
  return sessions;
}

test('members join on the page, watch at the tier\'s quality and limit, see history and renewal failures; others see "Members only"', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 420_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-memberships-'));
  const { child, base, rtmp } = await startServer(bin, join(work, 'data'), ['--admin-token', ADMIN, '--pool-round-seconds', '10']);
  const publishers = [];
  let browser;
  try {
    // The admin's StreamWeave tiers: Basic (360p, one stream), Plus (720p), and a short-lived dear one for the renewal failure.
    const basic = await api(base, '/api/v1/admin/tiers', { method: 'POST', token: ADMIN, body: { name: 'Basic', price: '2000000', max_height: 360, max_streams: 1, description: 'Every members stream, in 360p.' } });
    assert.equal(basic.offerer, 'platform');
    assert.equal(basic.max_height, 360);
    assert.equal(basic.period_seconds, 2_592_000, 'the default period is 30 days');
    const plus = await api(base, '/api/v1/admin/tiers', { method: 'POST', token: ADMIN, body: { name: 'Plus', price: '5000000', max_height: 720, max_streams: 2 } });
    const flash = await api(base, '/api/v1/admin/tiers', { method: 'POST', token: ADMIN, body: { name: 'Flash', price: '15000000', period_seconds: 12, max_height: 480, max_streams: 1, description: 'Twelve seconds, for the test.' } });
    const refusedTier = await call(base, '/api/v1/admin/tiers', { method: 'POST', body: { name: 'x', price: '1', max_height: 360, max_streams: 1 } });
    assert.ok(refusedTier.status === 401 || refusedTier.status === 403, `an admin tier needs the admin: ${refusedTier.status}`);

    // A creator live for members: one stream at 854x480 (480p and 360p), another at 640x360.
    const creatorKey = generatePrivateKey();
    const creator = privateKeyToAccount(creatorKey);
    const creatorAddress = creator.address.toLowerCase();
    const creatorToken = await signInNode(base, creator);
    const stream = await api(base, '/api/v1/streams', { method: 'POST', token: creatorToken, body: { title: 'Members Jazz Hour', category: 'music', access: 'members', tiers: ['platform'] } });
    const other = await api(base, '/api/v1/streams', { method: 'POST', token: creatorToken, body: { title: 'Members Chess Night', access: 'members', tiers: ['platform'] } });
    assert.equal(stream.access, 'members');
    assert.deepEqual(stream.tiers, ['platform']);
    publishers.push(publish(rtmp, stream.stream_key, 300, '854x480'), publish(rtmp, other.stream_key, 300));

    browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
    const errors = [];
    const watchErrors = (page) => page.on('pageerror', (e) => errors.push(e.message));
    const newContext = () => browser.newContext({ viewport: { width: 1360, height: 950 } });
    mkdirSync(results, { recursive: true });

    // 1. The viewer signs in with a demo wallet on /membership and joins Basic there.
    const viewerContext = await newContext();
    const viewer = await viewerContext.newPage();
    watchErrors(viewer);
    await viewer.goto(`${base}/membership`);
    await viewer.locator(`[data-tiers=platform] li[data-tier="${basic.id}"]`).waitFor({ timeout: 15_000 });
    assert.match(await viewer.locator(`li[data-tier="${basic.id}"]`).innerText(), /2\.00 USDC per 30 days[\s\S]*Up to 360p · 1 stream at once/);
    await viewer.locator('sw-wallet [data-action=demo-wallet]').first().click();
    const joinBasic = viewer.locator(`li[data-tier="${basic.id}"] [data-action=join]`);
    await joinBasic.waitFor({ timeout: 20_000 });
    const viewerAuth = await pageAuth(viewer);
    const before = await api(base, `/api/v1/accounts/${viewerAuth.address}/balances`, { token: viewerAuth.token });
    await joinBasic.click();
    await viewer.locator('[data-membership-status].ok', { hasText: 'You are a member of Basic' }).waitFor({ timeout: 15_000 });
    const row = viewer.locator('[data-memberships] tr[data-offerer=platform][data-active=true][data-auto-renew=true]');
    await row.waitFor({ timeout: 10_000 });
    assert.match(await row.innerText(), /Basic[\s\S]*Renews/);
    const { memberships } = await api(base, '/api/v1/accounts/me/memberships', { token: viewerAuth.token });
    assert.equal(memberships.length, 1, 'one membership, joined on the page');
    assert.equal(memberships[0].tier.id, basic.id);
    assert.equal(memberships[0].active, true);
    assert.equal(memberships[0].auto_renew, true);
    const after = await api(base, `/api/v1/accounts/${viewerAuth.address}/balances`, { token: viewerAuth.token });
    assert.equal(BigInt(before.available) - BigInt(after.available), 2_000_000n, 'the tier\'s price came out of the available balance');
    // Basic is the viewer's tier now; Plus, dearer, is an upgrade.
    await viewer.locator(`li[data-tier="${basic.id}"].current`).waitFor();
    await viewer.locator(`li[data-tier="${plus.id}"] [data-action=upgrade]`).waitFor();

    // 2. The viewer watches the members stream at 360p.
    await until('both members streams to be live', async () => (await api(base, `/api/v1/streams/${stream.id}`)).state === 'live'
      && (await api(base, `/api/v1/streams/${other.id}`)).state === 'live', 60_000);
    const viewerSessions = recordSessions(viewer);
    const progressPosts = [];
    viewer.on('request', (req) => { if (req.method() === 'POST' && req.url().endsWith('/progress')) progressPosts.push(req.postDataJSON()); });
    await viewer.goto(`${base}/watch/${stream.id}`);
    await viewer.locator('[data-members-note]', { hasText: 'any StreamWeave membership' }).waitFor({ timeout: 10_000 });
    await playsPast(viewer, 3, 'the member\'s stream');
    const t1 = await videoTime(viewer);
    await viewer.waitForTimeout(3000);
    const t2 = await videoTime(viewer);
    assert.ok(t2 > t1 + 1, `the member's video plays on (${t1} -> ${t2})`);
    assert.equal(await viewer.locator('sw-player').getAttribute('state'), 'playing');
    const first = viewerSessions.filter((s) => s.status === 201).at(-1)?.body;
    assert.ok(first, `a member session was started: ${JSON.stringify(viewerSessions)}`);
    assert.equal(first.max_height, 360);
    assert.equal(first.membership_id, memberships[0].id);
    // The stream has 480p; the tier's menu does not, and says why.
    const ladder = (await api(base, `/api/v1/streams/${stream.id}`)).renditions.map((r) => r.name);
    assert.ok(ladder.includes('480p') && ladder.includes('360p'), `the ladder: ${ladder}`);
    const options = await viewer.locator('sw-player select[aria-label=Quality] option').allInnerTexts();
    assert.ok(options.includes('360p'), `the quality menu: ${options}`);
    assert.ok(!options.some((o) => o.includes('480')), `no 480p in the member's menu: ${options}`);
    const note = viewer.locator('sw-player [data-quality-note]');
    assert.ok(await note.isVisible(), 'the tier\'s limit is shown');
    assert.equal(await note.innerText(), 'Your tier allows up to 360p');
    // What the server gives the session: no 480p listed, and 480p refused.
    const master = await call(base, first.playback_url);
    assert.equal(master.status, 200);
    assert.ok(master.data.includes('360p/index.m3u8') && !master.data.includes('480p'), master.data);
    const tooHigh = await call(base, first.playback_url.replace('master.m3u8', '480p/index.m3u8'));
    assert.equal(tooHigh.status, 403);
    assert.match(String(tooHigh.data?.type), /tier-quality$/);
    // Progress goes to the server while playing (the first soon, then every 30 s).
    await until('a progress report', async () => progressPosts.length > 0, 20_000);
    assert.ok(progressPosts[0].position_ms > 0, JSON.stringify(progressPosts));
    await viewer.screenshot({ path: join(results, 'member-watch.png') });

    // 3. A second tab of the viewer opens the other members stream: one stream at once.
    const second = await viewerContext.newPage();
    watchErrors(second);
    const secondSessions = recordSessions(second);
    await second.goto(`${base}/watch/${other.id}`);
    await second.locator('sw-player[state=too-many-streams]').waitFor({ timeout: 20_000 });
    const overlay = second.locator('sw-player .overlay');
    assert.match(await overlay.innerText(), /Too many streams at once[\s\S]*allows 1 stream at once/);
    const listed = second.locator(`sw-player [data-active-sessions] li[data-session="${first.id}"][data-stream="${stream.id}"]`);
    await listed.waitFor();
    await listed.locator('a', { hasText: 'Members Jazz Hour' }).waitFor({ timeout: 10_000 });
    assert.equal(secondSessions[0]?.status, 409);
    assert.match(String(secondSessions[0]?.body?.type), /too-many-streams$/);
    assert.equal(await videoTime(second), 0, 'nothing plays past the limit');
    await second.screenshot({ path: join(results, 'member-limit.png') });
    // Ending the first tab's session from here lets this one play.
    await listed.locator('[data-action=end-session]').click();
    await playsPast(second, 2, 'the second tab, after ending the other session');
    assert.equal(secondSessions.at(-1).status, 201);
    // The first tab's session is gone: it meets the limit in turn, and ends the other to watch again.
    await viewer.locator('sw-player[state=too-many-streams]').waitFor({ timeout: 40_000 }).catch(async (err) => {
      throw new Error(`the first tab did not meet the limit: ${JSON.stringify(await playerInfo(viewer))} (${err.message})`);
    });
    const secondId = secondSessions.at(-1).body.id;
    await viewer.locator(`sw-player [data-active-sessions] li[data-session="${secondId}"] [data-action=end-session]`).click();
    await viewer.waitForFunction(() => document.querySelector('sw-player')?.getAttribute('state') === 'playing', null, { timeout: 60_000 });
    await second.locator('sw-player[state=too-many-streams]').waitFor({ timeout: 40_000 });

    // 4. Member sessions last 4 hours: one answered 401 session-expired is replaced by a new session.
    const current = viewerSessions.filter((s) => s.status === 201).at(-1).body;
    let expired = 0;
    await viewer.route(/\/play\/[0-9a-f]+\/.*\.m3u8/, async (route) => {
      if (!expired && route.request().url().includes(current.id)) {
        expired += 1;
        await route.fulfill({ status: 401, contentType: 'application/problem+json', body: JSON.stringify({ type: '/problems/session-expired', title: 'Session expired', status: 401, detail: 'member sessions last 4 hours: start a new one' }) });
        return;
      }
      await route.continue();
    });
    await until('a new session after the expiry', async () => viewerSessions.filter((s) => s.status === 201).at(-1).body.id !== current.id, 30_000);
    assert.equal(expired, 1);
    const renewed = viewerSessions.filter((s) => s.status === 201).at(-1).body;
    assert.equal((await call(base, current.playback_url)).status, 404, 'the expired session was ended');
    await viewer.waitForFunction(() => document.querySelector('sw-player')?.getAttribute('state') === 'playing', null, { timeout: 60_000 });
    const t3 = await videoTime(viewer);
    await viewer.waitForTimeout(3000);
    assert.ok(await videoTime(viewer) > t3 + 1, 'playing on with the new session');
    assert.equal((await call(base, renewed.playback_url)).status, 200);
    await viewer.unroute(/\/play\/[0-9a-f]+\/.*\.m3u8/);

    // 5. A visitor without a membership: "Members only", and nothing played.
    const visitorContext = await newContext();
    const visitor = await visitorContext.newPage();
    watchErrors(visitor);
    const played = [];
    visitor.on('request', (req) => { if (/\/play\/|\/live\/|\.m3u8|\.m4s/.test(new URL(req.url()).pathname)) played.push(req.url()); });
    const visitorSessions = recordSessions(visitor);
    await visitor.goto(`${base}/watch/${stream.id}`);
    await visitor.locator('sw-player[state=signed-out]').waitFor({ timeout: 15_000 });
    assert.match(await visitor.locator('sw-player .overlay').innerText(), /Members only/);
    await visitor.locator('sw-player .overlay [data-action=demo-wallet]').click();
    await visitor.locator('sw-player[state=membership-required]').waitFor({ timeout: 20_000 });
    const gate = visitor.locator('sw-player .overlay');
    assert.ok(await gate.isVisible());
    assert.match(await gate.innerText(), /Members only[\s\S]*no membership/);
    await gate.locator('[data-member-tiers]', { hasText: 'any StreamWeave membership' }).waitFor({ timeout: 10_000 });
    assert.equal(await gate.locator('[data-action=memberships]').getAttribute('href'), `/membership?creator=${creatorAddress}`);
    assert.equal(visitorSessions.length, 1);
    assert.equal(visitorSessions[0].status, 403);
    assert.match(String(visitorSessions[0].body?.type), /membership-required$/);
    assert.deepEqual(visitorSessions[0].body.tiers, ['platform']);
    await visitor.waitForTimeout(2000);
    assert.deepEqual(played, [], 'no playlist or segment requested without a membership');
    assert.equal(await videoTime(visitor), 0);
    await visitor.screenshot({ path: join(results, 'members-only.png') });

    // 6. The visitor joins Flash (twelve seconds, 15 of their 20 USDC): its renewal fails for want of balance, and says so.
    await visitor.locator('sw-player .overlay [data-action=memberships]').click();
    await visitor.waitForURL(`${base}/membership?creator=${creatorAddress}`);
    await visitor.locator('[data-tiers=creator]', { hasText: 'This creator offers no memberships yet' }).waitFor({ timeout: 10_000 });
    await visitor.locator(`[data-tiers=platform] li[data-tier="${flash.id}"] [data-action=join]`).click();
    await visitor.locator('[data-membership-status].ok', { hasText: 'You are a member of Flash' }).waitFor({ timeout: 15_000 });
    // Pushed to the open page (no reload): the failure and its reason.
    const pushed = visitor.locator('[data-membership-status].error', { hasText: 'could not renew' });
    await pushed.waitFor({ timeout: 60_000 });
    const visitorAuth = await pageAuth(visitor);
    const { memberships: list } = await api(base, '/api/v1/accounts/me/memberships', { token: visitorAuth.token });
    const failed = list.find((m) => m.renewal_failure);
    assert.ok(failed, 'the API lists the failure');
    assert.ok((await pushed.innerText()).includes(failed.renewal_failure), 'the pushed notice gives the reason');
    const failure = visitor.locator(`[data-memberships] tr[data-membership="${failed.id}"] [data-renewal-failure]`);
    await failure.waitFor({ timeout: 15_000 });
    assert.ok(await failure.isVisible());
    const failureText = await failure.innerText();
    assert.ok(failureText.includes(failed.renewal_failure), `the reason shown: "${failureText}" (the API's: "${failed.renewal_failure}")`);
    assert.match(failureText, /renewal failed/);

    // 7. The viewer's history on /membership: the stream, with a resume link; then the renewal is stopped.
    await until('the history to list the stream', async () => (await api(base, '/api/v1/accounts/me/history', { token: viewerAuth.token })).history.some((x) => x.stream_id === stream.id), 40_000);
    await second.close();
    await viewer.goto(`${base}/membership`);
    const watched = viewer.locator(`[data-watch-history] tr[data-history="${stream.id}"]`);
    await watched.waitFor({ timeout: 15_000 });
    assert.match(await watched.innerText(), /Members Jazz Hour/);
    assert.match(await watched.locator('[data-action=resume]').getAttribute('href'), new RegExp(`^/watch/${stream.id}(\\?t=\\d+)?$`));
    assert.ok(Number(await watched.getAttribute('data-position-ms')) > 0, 'a position to resume from');
    // Upgrade to Plus now, then downgrade back to Basic at the renewal.
    await viewer.locator(`li[data-tier="${plus.id}"] [data-action=upgrade]`).click();
    await viewer.locator('[data-membership-status].ok', { hasText: 'Upgraded to Plus' }).waitFor({ timeout: 15_000 });
    await viewer.locator(`li[data-tier="${plus.id}"].current`).waitFor();
    let membership = (await api(base, '/api/v1/accounts/me/memberships', { token: viewerAuth.token })).memberships[0];
    assert.equal(membership.tier.id, plus.id, 'the upgrade applies at once');
    assert.equal(membership.expires_at, memberships[0].expires_at, 'for the rest of the same period');
    await viewer.locator(`li[data-tier="${basic.id}"] [data-action=downgrade]`).click();
    await viewer.locator('[data-membership-status].ok', { hasText: 'Basic starts at your renewal' }).waitFor({ timeout: 15_000 });
    await viewer.locator(`[data-memberships] tr[data-offerer=platform] [data-next-tier="${basic.id}"]`, { hasText: 'Changes to Basic at renewal' }).waitFor();
    membership = (await api(base, '/api/v1/accounts/me/memberships', { token: viewerAuth.token })).memberships[0];
    assert.equal(membership.tier.id, plus.id, 'Plus until the renewal');
    assert.equal(membership.next_tier_id, basic.id);
    await viewer.locator('[data-memberships] tr[data-offerer=platform] [data-action=stop-renewal]').click();
    await viewer.locator('[data-memberships] tr[data-offerer=platform][data-active=true][data-auto-renew=false]', { hasText: 'Renewal stopped' }).waitFor({ timeout: 10_000 });
    // With the renewal stopped, the downgrade will not happen, and the page says so.
    await viewer.locator(`[data-memberships] [data-next-tier="${basic.id}"]`, { hasText: 'renewal stopped' }).waitFor();
    await viewer.locator(`li[data-tier="${basic.id}"] [data-action=downgrade]`).waitFor();
    const stopped = (await api(base, '/api/v1/accounts/me/memberships', { token: viewerAuth.token })).memberships[0];
    assert.equal(stopped.auto_renew, false);
    assert.equal(stopped.active, true, 'access lasts until it expires');
    await viewer.screenshot({ path: join(results, 'membership.png'), fullPage: true });

    // 8. The creator's studio: a tier of their own, and the pool's allocations to them.
    const studio = await (await newContext()).newPage();
    watchErrors(studio);
    await studio.goto(`${base}/studio#demo-key=${creatorKey}`);
    const section = studio.locator('[data-studio-memberships]');
    await section.locator('[data-action=new-tier]').click();
    await section.locator('input[name=tier-name]').fill('Front Row');
    await section.locator('input[name=tier-price]').fill('3');
    await section.locator('select[name=tier-height]').selectOption('720');
    await section.locator('input[name=tier-streams]').fill('2');
    await section.locator('[data-action=create-tier]').click();
    await section.locator('[data-studio-tiers] tr', { hasText: 'Front Row' }).waitFor({ timeout: 10_000 });
    const mine = (await api(base, `/api/v1/tiers?offerer=${creatorAddress}`)).tiers;
    assert.equal(mine.length, 1);
    assert.deepEqual([mine[0].name, mine[0].price, mine[0].max_height, mine[0].max_streams, mine[0].period_seconds], ['Front Row', '3000000', 720, 2, 2_592_000]);
    // A new members stream for Front Row and any StreamWeave membership.
    await studio.getByRole('button', { name: 'New stream' }).click();
    const form = studio.locator('form', { has: studio.locator('select[name=access]') }).first();
    await form.locator('input[name=title]').fill('Front Row Rehearsal');
    await form.locator('select[name=access]').selectOption('members');
    const picker = form.locator('[data-tier-picker]');
    await picker.locator(`input[name=tiers][value="${mine[0].id}"]`).check();
    assert.equal(await picker.locator('input[name=tiers][value=platform]').isChecked(), true, 'any StreamWeave membership by default');
    await form.getByRole('button', { name: 'Create stream' }).click();
    const made = await until('the members stream', async () => (await api(base, `/api/v1/streams?owner=${creatorAddress}`)).find((x) => x.title === 'Front Row Rehearsal'), 15_000);
    assert.equal(made.access, 'members');
    assert.deepEqual([...made.tiers].sort(), ['platform', mine[0].id].sort());
    const allocated = async () => (await api(base, '/api/v1/pool/rounds')).rounds
      .filter((r) => r.allocations.some((a) => a.creator.toLowerCase() === creatorAddress && BigInt(a.amount) > 0n));
    await until('a round allocating to the creator', async () => (await allocated()).length > 0, 40_000);
    await studio.reload();
    const pool = studio.locator('[data-pool-earnings]');
    await pool.locator('tr[data-round]').first().waitFor({ timeout: 15_000 }).catch(async (err) => {
      throw new Error(`no pool earnings shown: "${await pool.innerText()}" (${JSON.stringify(await allocated())}) (${err.message})`);
    });
    const rounds = new Map((await api(base, '/api/v1/pool/rounds')).rounds.map((r) => [String(r.round), r]));
    let shown = 0n;
    for (const tr of await pool.locator('tr[data-round]').all()) {
      const round = rounds.get(await tr.getAttribute('data-round'));
      assert.ok(round, 'a round the API has');
      const theirs = round.allocations.filter((a) => a.creator.toLowerCase() === creatorAddress).reduce((s, a) => s + BigInt(a.amount), 0n);
      assert.equal(await tr.getAttribute('data-amount'), theirs.toString(), `round ${round.round}'s allocation to the creator`);
      assert.equal(await tr.locator('a').getAttribute('href'), `/ipfs/${round.statement_cid}`);
      shown += theirs;
    }
    assert.ok(shown > 0n);
    assert.equal(await pool.getAttribute('data-total'), shown.toString(), 'the total is the rounds\' sum');
    await section.screenshot({ path: join(results, 'studio-memberships.png') });
    await pool.screenshot({ path: join(results, 'pool-earnings.png') });
    // The creator's tier is on their memberships page.
    await visitor.goto(`${base}/membership?creator=${creatorAddress}`);
    await visitor.locator(`[data-tiers=creator] li[data-tier="${mine[0].id}"]`, { hasText: '3.00 USDC per 30 days' }).waitFor({ timeout: 10_000 });

    assert.deepEqual(errors, [], 'no script errors');
  } finally {
    await browser?.close();
    for (const p of publishers) p.kill();
    await stopAndRemove(child, work);
  }
});
