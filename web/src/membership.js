// Memberships: the page /membership (StreamWeave's tiers and, with
// ?creator=0x.., a creator's; joining, upgrading, downgrading, stopping the
// renewal; your memberships with their renewal state; your watch history
// with resume links), and the studio's "Memberships" (a creator's tiers)
// and "Pool earnings" (what the engagement pool paid you, round by round).
import {
  ApiError, authed, formatAmount, formatDuration, h, onAuth, parseAmount, periodText, request, shortAddress,
} from '/assets/streamweave.js';

const main = document.getElementById('main');

function setMain(...children) {
  main.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
}

function errorText(err) {
  return err instanceof ApiError || err instanceof Error ? err.message : String(err);
}

function day(iso) {
  return new Date(iso).toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

const ADDRESS = /^0x[0-9a-f]{40}$/;

/** "5.00 USDC per 30 days". */
export function tierPrice(tier) {
  return `${formatAmount(tier.price)} per ${periodText(tier.period_seconds)}`;
}

/** "Up to 720p · 2 streams at once". */
export function tierLimits(tier) {
  return `Up to ${tier.max_height}p · ${tier.max_streams} stream${tier.max_streams === 1 ? '' : 's'} at once`;
}

function offererText(offerer) {
  return offerer === 'platform' ? 'StreamWeave' : shortAddress(offerer);
}

function offererLink(offerer) {
  return offerer === 'platform'
    ? h('span', {}, 'StreamWeave')
    : h('a', { href: `/membership?creator=${offerer}`, title: offerer }, shortAddress(offerer));
}

/** What a problem means to a member, with what to do about it. */
function joinError(err) {
  if (err.type === 'insufficient-balance') return ['Not enough available balance for this membership: ', h('a', { href: '/account' }, 'add funds on your account page'), '.'];
  if (err.type === 'offerer-suspended') return ['This membership is suspended and cannot be bought right now.'];
  return [errorText(err)];
}

// ---- /membership ------------------------------------------------------------

export async function membershipPage() {
  onAuth((auth) => {
    listenToAccount(auth);
    renderMembership(auth);
  });
}

// Renewals happen on the server at expiry: it tells the member's open
// pages at once (a paid renewal, or one that could not be paid and why).
let accountSocket = null;

function listenToAccount(auth) {
  accountSocket?.close();
  accountSocket = null;
  if (!auth) return;
  const url = `${location.origin.replace(/^http/, 'ws')}/api/v1/accounts/me/events?token=${encodeURIComponent(auth.token)}`;
  const socket = new WebSocket(url);
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (event.type === 'membership_renewal_failed') {
      renderMembership(auth, { kind: 'error', text: `A membership could not renew: ${event.reason}. Add funds and join again to keep watching.` });
    } else if (event.type === 'membership_renewed') {
      renderMembership(auth, { kind: 'ok', text: `A membership renewed, until ${day(event.expires_at)}.` });
    }
  };
  accountSocket = socket;
}

let rendering = 0;

async function renderMembership(auth, notice = null) {
  const turn = ++rendering;
  const params = new URLSearchParams(location.search);
  const creatorParam = (params.get('creator') ?? '').trim().toLowerCase();
  const creator = ADDRESS.test(creatorParam) ? creatorParam : null;
  let platformTiers;
  let creatorTiers = [];
  let memberships = [];
  let watchedItems = [];
  let balances = null;
  try {
    const [platform, ofCreator, mine, watched, money] = await Promise.all([
      request('/api/v1/tiers?offerer=platform'),
      creator ? request(`/api/v1/tiers?offerer=${creator}`) : null,
      auth ? authed('/api/v1/accounts/me/memberships') : null,
      auth ? authed('/api/v1/accounts/me/history') : null,
      auth ? authed(`/api/v1/accounts/${auth.address}/balances`).catch(() => null) : null,
    ]);
    platformTiers = platform.tiers ?? [];
    creatorTiers = ofCreator?.tiers ?? [];
    memberships = mine?.memberships ?? [];
    watchedItems = watched?.history ?? [];
    balances = money;
  } catch (err) {
    if (turn === rendering) setMain(h('h1', {}, 'Membership'), h('p', { class: 'error' }, `Cannot load memberships: ${errorText(err)}`));
    return;
  }
  if (turn !== rendering) return;
  const refresh = (message) => renderMembership(auth, message);
  const status = h('p', { role: 'status', 'data-membership-status': '' });
  if (notice) {
    status.className = notice.kind;
    status.replaceChildren(...[notice.text].flat());
  }
  const fail = (err) => { status.className = 'error'; status.replaceChildren(...joinError(err)); };
  // The tiers by id, for names of pending downgrades.
  const tiersById = new Map([...platformTiers, ...creatorTiers, ...memberships.map((m) => m.tier)].map((t) => [t.id, t]));
  const active = new Map(memberships.filter((m) => m.active).map((m) => [m.offerer, m]));

  const join = async (tier, autoRenew, button) => {
    button.disabled = true;
    status.className = 'muted';
    status.textContent = 'Joining…';
    try {
      const m = await authed('/api/v1/memberships', { method: 'POST', body: { tier_id: tier.id, auto_renew: autoRenew, id: crypto.randomUUID() } });
      const text = m.change === 'upgrade'
        ? `Upgraded to ${m.tier.name}: it applies now, until ${day(m.expires_at)}.`
        : m.change === 'downgrade'
          ? `${tier.name} starts at your renewal on ${day(m.expires_at)}; until then you keep ${m.tier.name}.`
          : `You are a member of ${m.tier.name} until ${day(m.expires_at)}.`;
      refresh({ kind: 'ok', text });
    } catch (err) {
      button.disabled = false;
      fail(err);
    }
  };

  const tierCard = (tier) => {
    const mine = active.get(tier.offerer);
    const current = mine?.tier.id === tier.id;
    // A downgrade waits for the renewal: with the renewal stopped it will not happen.
    const pending = mine?.next_tier_id === tier.id && mine.auto_renew;
    let action = null;
    if (!auth) {
      action = h('p', { class: 'muted' }, 'Sign in to join.');
    } else if (current) {
      const extend = h('button', { class: 'secondary', 'data-action': 'extend', onclick: () => join(tier, mine.auto_renew, extend) }, `Add a period (${formatAmount(tier.price)})`);
      action = h('div', { class: 'row' }, h('span', { class: 'ok' }, `Your tier until ${day(mine.expires_at)}`), extend);
    } else if (pending) {
      action = h('p', { class: 'muted' }, `Starts at your renewal on ${day(mine.expires_at)}.`);
    } else if (tier.suspended) {
      action = h('p', { class: 'muted' }, 'Not sold right now.');
    } else if (mine) {
      const dearer = BigInt(tier.price) > BigInt(mine.tier.price);
      const button = h('button', { class: dearer ? null : 'secondary', 'data-action': dearer ? 'upgrade' : 'downgrade', onclick: () => join(tier, true, button) },
        dearer ? 'Upgrade now' : 'Downgrade at renewal');
      action = h('div', { class: 'form' }, button,
        h('small', { class: 'muted' }, dearer
          ? `You pay the difference for the rest of your period (until ${day(mine.expires_at)}); the new quality applies at once.`
          : `You keep ${mine.tier.name} until ${day(mine.expires_at)}, then renew at ${tierPrice(tier)}.`));
    } else {
      const renew = h('input', { type: 'checkbox', name: 'auto-renew', checked: true });
      const button = h('button', { 'data-action': 'join', onclick: () => join(tier, renew.checked, button) }, `Join for ${formatAmount(tier.price)}`);
      action = h('div', { class: 'row' }, button, h('label', { class: 'check' }, renew, 'Renew automatically'));
    }
    return h('li', { class: `tier-card${current ? ' current' : ''}`, dataset: { tier: tier.id, offerer: tier.offerer } },
      h('div', { class: 'row spread' }, h('strong', { class: 'tier-name' }, tier.name),
        current ? h('span', { class: 'badge member' }, 'Your tier') : tier.suspended ? h('span', { class: 'badge' }, 'Suspended') : null),
      h('p', { class: 'tier-price', 'data-price': tier.price }, tierPrice(tier)),
      h('p', { class: 'muted', 'data-limits': '' }, tierLimits(tier)),
      tier.description ? h('p', { class: 'description' }, tier.description) : null,
      action);
  };
  const tierSection = (title, key, tiers, empty, intro) => h('section', { class: 'panel', 'aria-label': title, dataset: { tiers: key } },
    h('h2', {}, title),
    intro ? h('p', { class: 'muted' }, intro) : null,
    tiers.length
      ? h('ul', { class: 'tiers' }, [...tiers].sort((a, b) => (BigInt(a.price) < BigInt(b.price) ? -1 : BigInt(a.price) > BigInt(b.price) ? 1 : 0)).map(tierCard))
      : h('p', { class: 'muted' }, empty));

  const membershipRow = (m) => {
    const next = m.next_tier_id ? tiersById.get(m.next_tier_id) : null;
    const stop = m.active && m.auto_renew ? h('button', { class: 'secondary', 'data-action': 'stop-renewal', onclick: async () => {
      stop.disabled = true;
      try {
        const after = await authed(`/api/v1/memberships/${encodeURIComponent(m.id)}`, { method: 'DELETE' });
        refresh({ kind: 'ok', text: `Renewal stopped: ${after.tier.name} lasts until ${day(after.expires_at)}.` });
      } catch (err) { stop.disabled = false; fail(err); }
    } }, 'Stop renewal') : null;
    const again = !m.active && !m.tier.suspended ? h('button', { 'data-action': 'rejoin', onclick: () => join(m.tier, true, again) }, 'Join again') : null;
    const renewal = !m.active
      ? h('span', { class: 'muted' }, `Ended ${day(m.expires_at)}`)
      : m.auto_renew
        ? h('span', {}, `Renews ${day(m.expires_at)}`, ` for ${formatAmount((next ?? m.tier).price)}`)
        : h('span', { class: 'muted' }, `Renewal stopped: ends ${day(m.expires_at)}`);
    return h('tr', { dataset: { membership: m.id, offerer: m.offerer, active: String(m.active), autoRenew: String(m.auto_renew) } },
      h('td', {}, offererLink(m.offerer)),
      h('td', {}, h('strong', {}, m.tier.name), h('br'), h('small', { class: 'muted' }, tierLimits(m.tier)),
        m.next_tier_id && m.active ? h('div', { class: 'muted', 'data-next-tier': m.next_tier_id }, m.auto_renew
          ? `Changes to ${next?.name ?? 'another tier'} at renewal`
          : `${next?.name ?? 'Another tier'} was to follow at renewal (renewal stopped)`) : null),
      h('td', {}, m.active ? h('span', { class: 'badge member' }, 'Active') : h('span', { class: 'badge' }, 'Expired'), ' ', h('span', { 'data-expires-at': m.expires_at }, day(m.expires_at))),
      h('td', {}, renewal,
        m.renewal_failure ? h('div', { class: 'error', 'data-renewal-failure': '' },
          `The last renewal failed${m.renewal_failed_at ? ` (${day(m.renewal_failed_at)})` : ''}: ${m.renewal_failure}`) : null),
      h('td', {}, stop, again));
  };

  const historyRow = (item) => {
    const seconds = Math.floor(item.position_ms / 1000);
    const href = `/watch/${encodeURIComponent(item.stream_id)}${seconds > 0 ? `?t=${seconds}` : ''}`;
    return h('tr', { dataset: { history: item.stream_id, positionMs: item.position_ms } },
      h('td', {}, h('a', { href: `/watch/${encodeURIComponent(item.stream_id)}` }, item.title)),
      h('td', {}, item.duration_ms != null ? `${formatDuration(seconds)} of ${formatDuration(item.duration_ms / 1000)}` : `at ${formatDuration(seconds)}`),
      h('td', {}, day(item.updated_at)),
      h('td', {}, h('a', { href, 'data-action': 'resume' }, 'Resume')));
  };

  const creatorInput = h('input', { name: 'creator', value: creator ?? creatorParam, placeholder: '0x… creator address', size: 44, 'aria-label': 'Creator address' });
  const creatorForm = h('form', { class: 'row', onsubmit: (e) => {
    e.preventDefault();
    const value = creatorInput.value.trim().toLowerCase();
    history.pushState(null, '', value ? `/membership?creator=${encodeURIComponent(value)}` : '/membership');
    renderMembership(auth);
  } }, h('label', {}, 'A creator\'s memberships', creatorInput), h('button', { type: 'submit', class: 'secondary' }, 'Show'));

  setMain(
    h('div', { class: 'discover-head' }, h('h1', {}, 'Membership'),
      balances ? h('span', { class: 'muted' }, 'Available balance ', h('strong', { 'data-balance': 'available' }, formatAmount(balances.available)), ' · ', h('a', { href: '/account' }, 'Account')) : null),
    h('p', { class: 'muted' }, 'Members watch members-only streams without paying by the second. A StreamWeave membership opens every stream for StreamWeave members (the creators you watch share it by your watching); a creator\'s membership opens theirs. Your tier sets the best quality and how many streams at once.'),
    status,
    auth ? null : h('div', { class: 'panel center' }, h('h2', {}, 'Sign in to join'), h('p', {}, 'Memberships are paid from your available balance.'), h('sw-wallet')),
    auth ? h('section', { class: 'panel', 'aria-label': 'Your memberships', 'data-memberships': '' },
      h('h2', {}, 'Your memberships'),
      memberships.length
        ? h('table', {}, h('thead', {}, h('tr', {}, ['From', 'Tier', 'Expires', 'Renewal', ''].map((t) => h('th', {}, t)))), h('tbody', {}, memberships.map(membershipRow)))
        : h('p', { class: 'muted' }, 'No memberships yet: join one below.')) : null,
    creatorParam && !creator ? h('p', { class: 'error' }, `"${creatorParam}" is not an address.`) : null,
    creator ? tierSection(`Memberships of ${shortAddress(creator)}`, 'creator', creatorTiers, 'This creator offers no memberships yet.',
      h('span', {}, 'Their members watch their members streams. ', h('a', { href: `/creators/${creator}` }, 'Their videos and recordings'), '.')) : null,
    tierSection('StreamWeave memberships', 'platform', platformTiers, 'No StreamWeave memberships are offered yet.', 'One membership for every stream open to StreamWeave members.'),
    h('section', { class: 'panel' }, creatorForm),
    auth ? h('section', { class: 'panel', 'aria-label': 'Watch history', 'data-watch-history': '' },
      h('h2', {}, 'Watch history'),
      watchedItems.length
        ? h('table', {}, h('thead', {}, h('tr', {}, ['Title', 'Where you were', 'Last watched', ''].map((t) => h('th', {}, t)))), h('tbody', {}, watchedItems.map(historyRow)))
        : h('p', { class: 'muted' }, 'Nothing yet: what you watch as a member shows here, to resume.')) : null,
  );
}

// ---- /watch/{id}: a members stream's note ---------------------------------------------

/** Which memberships admit to a members stream, with a link to join. */
export function membersNote(stream) {
  const note = h('p', { class: 'muted', 'data-members-note': '' }, 'Members only: ', h('a', { href: `/membership${stream.owner ? `?creator=${stream.owner}` : ''}` }, 'memberships'), '.');
  const wanted = stream.tiers ?? [];
  Promise.all(wanted.map((id) => (id === 'platform'
    ? Promise.resolve('any StreamWeave membership')
    : request(`/api/v1/tiers/${encodeURIComponent(id)}`).then((t) => `${t.name} (${offererText(t.offerer)}, ${tierPrice(t)})`, () => null))))
    .then((names) => {
      const known = names.filter(Boolean);
      if (known.length) {
        note.replaceChildren(`Members only: ${known.join(', ')}. `,
          h('a', { href: `/membership${stream.owner ? `?creator=${stream.owner}` : ''}` }, 'See memberships'), '.');
      }
    });
  return note;
}

// ---- /studio: memberships and pool earnings ------------------------------------------------

const HEIGHT_OPTIONS = [360, 480, 720, 1080];

/** Name, price, period, quality, streams at once and description of a tier (new or edited). */
function tierFields(tier) {
  const field = (label, input) => h('label', {}, label, input);
  const name = h('input', { name: 'tier-name', required: true, maxlength: 100, value: tier?.name ?? '' });
  const price = h('input', { name: 'tier-price', inputmode: 'decimal', required: true, size: 8, value: tier ? formatAmount(tier.price, { symbol: false }) : '5.00' });
  const days = h('input', { name: 'tier-days', type: 'number', min: 1, max: 3650, value: 30, disabled: Boolean(tier), title: tier ? 'The period is set when the tier is made' : null });
  if (tier) days.value = String(Math.max(1, Math.round(tier.period_seconds / 86_400)));
  const height = h('select', { name: 'tier-height' }, HEIGHT_OPTIONS.map((x) => h('option', { value: String(x) }, `${x}p`)));
  height.value = String(tier?.max_height ?? 720);
  const streams = h('input', { name: 'tier-streams', type: 'number', min: 1, max: 100, value: tier?.max_streams ?? 1, required: true });
  const description = h('textarea', { name: 'tier-description', rows: 2, maxlength: 2000 }, tier?.description ?? '');
  return {
    nodes: [h('div', { class: 'row' }, field('Name', name), field('Price (USDC)', price), tier ? null : field('Period (days)', days),
      field('Best quality', height), field('Streams at once', streams)), field('Description', description)],
    body() {
      const body = { name: name.value.trim(), price: parseAmount(price.value).toString(), max_height: Number(height.value), max_streams: Number(streams.value), description: description.value };
      if (!tier) body.period_seconds = Math.round(Number(days.value) * 86_400);
      return body;
    },
  };
}

/** The studio's "Memberships": make tiers of your channel, see and change them. */
export function membershipStudio(auth) {
  const list = h('div', { 'data-studio-tiers': '' }, h('p', { class: 'muted' }, 'Loading your tiers…'));
  const creating = h('div');
  const status = h('p', { role: 'status' });
  const load = async () => {
    let tiers;
    try {
      tiers = (await request(`/api/v1/tiers?offerer=${auth.address}`)).tiers ?? [];
    } catch (err) {
      list.replaceChildren(h('p', { class: 'error' }, `Cannot list your tiers: ${errorText(err)}`));
      return;
    }
    if (!tiers.length) { list.replaceChildren(h('p', { class: 'muted' }, 'No tiers yet: make one, then choose "Members" as a stream\'s access.')); return; }
    list.replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, ['Tier', 'Price', 'Members get', 'State', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, tiers.map((tier) => {
        const editing = h('td', { colspan: 5 });
        const editRow = h('tr', { hidden: true }, editing);
        const edit = h('button', { class: 'secondary', type: 'button', 'data-action': 'edit-tier', onclick: () => {
          if (!editRow.hidden) { editRow.hidden = true; return; }
          const fields = tierFields(tier);
          const error = h('p', { class: 'error', role: 'alert' });
          editing.replaceChildren(h('form', { class: 'form', onsubmit: async (e) => {
            e.preventDefault();
            try {
              await authed(`/api/v1/tiers/${encodeURIComponent(tier.id)}`, { method: 'PATCH', body: fields.body() });
              status.className = 'ok';
              status.textContent = BigInt(fields.body().price) !== BigInt(tier.price) ? 'Saved: the new price applies from each member\'s next renewal.' : 'Saved.';
              load();
            } catch (err) { error.textContent = errorText(err); }
          } }, fields.nodes, h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save tier')), error));
          editRow.hidden = false;
        } }, 'Edit');
        return [h('tr', { dataset: { tier: tier.id } },
          h('td', {}, h('strong', {}, tier.name), tier.description ? h('div', { class: 'muted' }, tier.description) : null),
          h('td', {}, tierPrice(tier)),
          h('td', {}, tierLimits(tier)),
          h('td', {}, tier.suspended ? h('span', { class: 'error' }, 'Suspended') : 'On sale'),
          h('td', {}, edit)), editRow];
      }).flat())),
    h('p', {}, h('a', { href: `/membership?creator=${auth.address}` }, 'Your memberships page'), h('span', { class: 'muted' }, ' (share it with your viewers)')));
  };
  const newButton = h('button', { type: 'button', 'data-action': 'new-tier', onclick: () => {
    const fields = tierFields(null);
    const error = h('p', { class: 'error', role: 'alert' });
    creating.replaceChildren(h('form', { class: 'form tier-form', onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      try {
        const tier = await authed('/api/v1/tiers', { method: 'POST', body: fields.body() });
        creating.replaceChildren();
        status.className = 'ok';
        status.textContent = `Made ${tier.name}. Choose "Members" as a stream's access to open it to its members.`;
        load();
        main.dispatchEvent(new CustomEvent('sw-tiers-changed'));
      } catch (err) { error.textContent = errorText(err); }
    } }, h('h3', {}, 'New tier'), fields.nodes, h('div', { class: 'row' }, h('button', { type: 'submit', 'data-action': 'create-tier' }, 'Create tier'),
      h('button', { type: 'button', class: 'secondary', onclick: () => creating.replaceChildren() }, 'Cancel')), error));
  } }, 'New tier');
  load();
  return h('section', { class: 'panel memberships-studio', 'aria-label': 'Memberships', 'data-studio-memberships': '' },
    h('div', { class: 'row spread' }, h('h2', {}, 'Memberships'), newButton),
    h('p', { class: 'muted' }, 'Tiers of your channel: members pay by the period and watch your members streams at the tier\'s quality. What they pay splits by your revenue split.'),
    creating, status, list);
}

/** A round's period: "Dec 3, 2026, 00:19:10 – 00:19:20" within a day, else two dates. */
function roundPeriod(round) {
  const start = new Date(round.starts_at);
  const end = new Date(round.ends_at);
  const short = end - start < 86_400_000;
  const time = { hour: '2-digit', minute: '2-digit', ...(end - start < 3_600_000 ? { second: '2-digit' } : {}) };
  if (short) return `${start.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', ...time })} – ${end.toLocaleTimeString(undefined, time)}`;
  return `${day(round.starts_at)} – ${day(round.ends_at)}`;
}

/** The studio's "Pool earnings": the engagement pool's allocations to you, by round. */
export function poolEarnings(auth) {
  const box = h('section', { class: 'panel', 'aria-label': 'Pool earnings', 'data-pool-earnings': '' }, h('h2', {}, 'Pool earnings'), h('p', { class: 'muted' }, 'Loading…'));
  (async () => {
    let rounds;
    try {
      rounds = (await request(`/api/v1/pool/rounds?creator=${auth.address}`)).rounds ?? [];
    } catch (err) {
      box.replaceChildren(h('h2', {}, 'Pool earnings'), h('p', { class: 'error' }, `Cannot read the pool's rounds: ${errorText(err)}`));
      return;
    }
    const mine = rounds.map((r) => ({ round: r, amount: (r.allocations ?? []).filter((a) => a.creator.toLowerCase() === auth.address).reduce((sum, a) => sum + BigInt(a.amount), 0n) }))
      .filter((x) => x.amount > 0n);
    const total = mine.reduce((sum, x) => sum + x.amount, 0n);
    box.dataset.total = total.toString();
    box.replaceChildren(h('h2', {}, 'Pool earnings'),
      h('p', { class: 'muted' }, 'StreamWeave memberships pay into a pool that each round divides among the creators members watched (the round\'s statement lists every input). Your share splits by your revenue split.'),
      ...(mine.length
        ? [h('p', {}, 'In all ', h('strong', { 'data-pool-total': total.toString() }, formatAmount(total)), ` over ${mine.length} round${mine.length === 1 ? '' : 's'}.`),
          h('table', {}, h('thead', {}, h('tr', {}, ['Round', 'Period', 'Yours', 'Mode', 'Statement'].map((t) => h('th', {}, t)))),
            h('tbody', {}, mine.map(({ round, amount }) => h('tr', { dataset: { round: round.round, amount: amount.toString() } },
              h('td', {}, `#${round.round}`),
              h('td', {}, roundPeriod(round)),
              h('td', { class: 'num' }, formatAmount(amount)),
              h('td', {}, round.mode),
              h('td', {}, round.statement_cid ? h('a', { href: `/ipfs/${round.statement_cid}` }, 'Statement') : '—')))))]
        : [h('p', { class: 'muted', 'data-pool-total': '0' }, 'No pool earnings yet: they come from StreamWeave members watching your members streams.')]));
  })();
  return box;
}
