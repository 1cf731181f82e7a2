// Events: ticketed live shows. The pages /events (upcoming with a countdown,
// live now, past), /events/{id} (tickets, the room for ticket holders, the
// tip leaderboard, the collectible minted for the top tipper) and /market
// (resale of tickets and collectibles), plus the "Tickets" and
// "Collectibles" sections of /account and the "Events" section of /studio.
import {
  ApiError, authed, currentAuth, formatAmount, formatDuration, h, onAuth, parseAmount, request, shortAddress,
} from '/assets/streamweave.js';

const main = document.getElementById('main');

function setMain(...children) {
  main.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
}

function errorText(err) {
  return err instanceof ApiError || err instanceof Error ? err.message : String(err);
}

const STATE_TEXT = { scheduled: 'Upcoming', live: 'Live', ended: 'Ended', finalized: 'Finalized', cancelled: 'Cancelled' };

export function eventBadge(state) {
  return h('span', { class: `badge event-${state} ${state === 'live' ? 'live' : ''}`.trim(), 'data-event-state': state }, STATE_TEXT[state] ?? state);
}

/** A ticket's refund in base units: the API gives an amount (or, from older servers, a flag). */
function refundedUnits(ticket) {
  if (ticket.refunded === true) return BigInt(ticket.price_paid ?? 0);
  if (!ticket.refunded) return 0n;
  try { return BigInt(ticket.refunded); } catch { return 0n; }
}

function fullyRefunded(ticket) {
  return refundedUnits(ticket) > 0n && refundedUnits(ticket) >= BigInt(ticket.price_paid ?? 0);
}

function when(iso) {
  const date = new Date(iso);
  return date.toLocaleString(undefined, { weekday: 'short', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

/** Milliseconds to "starts in 2d 03h 04m 05s" (from the largest unit there is). */
function countdownText(ms) {
  if (ms <= 0) return 'starting now';
  const total = Math.floor(ms / 1000);
  const days = Math.floor(total / 86_400);
  const hours = Math.floor((total % 86_400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const pad = (n) => String(n).padStart(2, '0');
  if (days) return `starts in ${days}d ${pad(hours)}h ${pad(minutes)}m ${pad(seconds)}s`;
  if (hours) return `starts in ${hours}h ${pad(minutes)}m ${pad(seconds)}s`;
  return `starts in ${minutes}m ${pad(seconds)}s`;
}

/** An element that counts down to `iso` (every countdown on the page ticks together). */
function countdown(iso) {
  const el = h('span', { class: 'countdown', 'data-countdown': iso, role: 'timer' }, countdownText(Date.parse(iso) - Date.now()));
  tickCountdowns();
  return el;
}

let ticking = null;
function tickCountdowns() {
  if (ticking) return;
  ticking = setInterval(() => {
    const all = document.querySelectorAll('[data-countdown]');
    for (const el of all) el.textContent = countdownText(Date.parse(el.dataset.countdown) - Date.now());
    if (!all.length) { clearInterval(ticking); ticking = null; }
  }, 1000);
}

/** Event titles by id: the list first, then any not in it one by one. */
async function eventsById(ids = []) {
  const map = new Map();
  try {
    for (const e of (await request('/api/v1/events')).events ?? []) map.set(e.id, e);
  } catch { /* titles are a nicety */ }
  const missing = [...new Set(ids)].filter((id) => id && !map.has(id));
  await Promise.all(missing.map(async (id) => {
    try { map.set(id, await request(`/api/v1/events/${encodeURIComponent(id)}`)); } catch { /* unknown */ }
  }));
  return map;
}

function eventLink(events, id) {
  const event = events.get(id);
  return h('a', { href: `/events/${encodeURIComponent(id)}` }, event ? event.title : `Event ${id.slice(0, 8)}`);
}

// ---- /events -----------------------------------------------------------------

function eventCard(event) {
  const thumb = h('img', { src: `/api/v1/streams/${event.stream_id}/thumbnail.jpg`, alt: '', loading: 'lazy', width: 320, height: 180 });
  const fallback = h('span', { class: 'thumb-fallback', 'aria-hidden': 'true' }, event.title.slice(0, 1).toUpperCase());
  thumb.addEventListener('error', () => thumb.replaceWith(fallback));
  const soldOut = event.tickets_left === 0;
  return h('li', {},
    h('a', { class: 'card', href: `/events/${encodeURIComponent(event.id)}`, dataset: { event: event.id } },
      h('div', { class: 'thumb' }, event.state === 'live' || event.state === 'ended' || event.state === 'finalized' ? thumb : fallback, eventBadge(event.state)),
      h('div', { class: 'card-body' },
        h('strong', { class: 'card-title' }, event.title),
        h('span', { class: 'muted' }, `by ${shortAddress(event.creator)} · ${when(event.starts_at)}`),
        event.state === 'scheduled' ? h('span', { class: 'card-countdown' }, countdown(event.starts_at)) : null,
        h('span', { class: 'card-meta' },
          h('span', {}, `${formatAmount(event.ticket.price)} a ticket`),
          event.state === 'scheduled' || event.state === 'live' ? h('span', { class: soldOut ? 'error' : null }, soldOut ? 'Sold out' : `${event.tickets_left} left`) : null,
          h('span', {}, formatDuration(event.duration_seconds)),
          event.category ? h('span', { class: 'chip' }, event.category) : null))));
}

export async function eventsPage() {
  let events;
  try {
    events = (await request('/api/v1/events')).events ?? [];
  } catch (err) {
    setMain(h('p', { class: 'error' }, `Cannot list events: ${errorText(err)}`));
    return;
  }
  const by = (a, b) => Date.parse(a.starts_at) - Date.parse(b.starts_at);
  const live = events.filter((e) => e.state === 'live').sort(by);
  const upcoming = events.filter((e) => e.state === 'scheduled').sort(by);
  const past = events.filter((e) => ['ended', 'finalized', 'cancelled'].includes(e.state)).sort((a, b) => by(b, a));
  const section = (title, key, list, empty) => h('section', { 'aria-label': title, dataset: { events: key } },
    h('h2', {}, title),
    list.length ? h('ul', { class: 'cards' }, list.map(eventCard)) : h('p', { class: 'muted' }, empty));
  setMain(
    h('div', { class: 'discover-head' }, h('h1', {}, 'Events'), h('a', { href: '/market' }, 'Resale market')),
    h('p', { class: 'muted' }, 'Live shows with tickets. The top tipper of each show gets its collectible.'),
    section('Live now', 'live', live, 'No show is live right now.'),
    section('Upcoming', 'upcoming', upcoming, 'Nothing scheduled yet.'),
    section('Past', 'past', past, 'No past events yet.'),
  );
}

// ---- /events/{id} ------------------------------------------------------------

export async function eventPage() {
  const id = decodeURIComponent(location.pathname.split('/')[2] || '');
  let event;
  try {
    event = await request(`/api/v1/events/${encodeURIComponent(id)}`, { token: currentAuth()?.token });
  } catch (err) {
    setMain(h('h1', {}, 'Event not found'), h('p', {}, err.status === 404 ? 'No event has this address.' : errorText(err)), h('a', { href: '/events' }, 'All events'));
    return;
  }
  document.title = `${event.title} · StreamWeave`;
  let auth = currentAuth();
  let tickets = [];
  let shown = null;
  let room = null; // the room's elements survive re-renders while the show goes on
  const status = h('p', { role: 'status', 'data-ticket-status': '' });

  const loadTickets = async () => {
    auth = currentAuth();
    if (!auth) { tickets = []; return; }
    try {
      const answer = await authed(`/api/v1/accounts/${auth.address}/tickets`);
      tickets = (answer.tickets ?? []).filter((t) => t.event_id === event.id && t.owner?.toLowerCase() === auth.address && !fullyRefunded(t));
    } catch (err) {
      tickets = [];
      status.className = 'error';
      status.textContent = `Cannot read your tickets: ${errorText(err)}`;
    }
  };

  const isCreator = () => Boolean(auth && auth.address === event.creator?.toLowerCase());
  const hasAccess = () => tickets.length > 0 || isCreator();
  const onAir = () => event.state === 'scheduled' || event.state === 'live';

  const buyForm = (where) => {
    const held = tickets.length;
    const perWallet = event.ticket.per_wallet ?? 4;
    const saleEnded = event.ticket.sale_ends_at && Date.parse(event.ticket.sale_ends_at) <= Date.now();
    if (!onAir()) return null;
    if (!auth) return h('div', { class: 'buy' }, h('p', { class: 'muted' }, 'Sign in to buy tickets.'), h('sw-wallet'));
    if (isCreator()) return h('p', { class: 'muted' }, 'This is your event: you watch it without a ticket.');
    if (event.tickets_left === 0) return h('p', { class: 'error', 'data-sold-out': '' }, 'Sold out. ', h('a', { href: `/market?event=${encodeURIComponent(event.id)}` }, 'Look for resold tickets'));
    if (saleEnded) return h('p', { class: 'muted' }, 'Ticket sales have ended.');
    const allowed = perWallet - held;
    if (allowed <= 0) return h('p', { class: 'muted' }, `You hold ${held} tickets, the most one wallet may buy.`);
    const max = Math.min(allowed, event.tickets_left ?? allowed);
    const quantity = h('input', { name: 'quantity', type: 'number', min: 1, max, value: 1, size: 4, 'aria-label': 'Quantity' });
    const total = h('span', { class: 'muted', 'data-total': '' });
    const showTotal = () => {
      const n = Math.max(1, Math.min(max, Number(quantity.value) || 1));
      total.textContent = `${n} × ${formatAmount(event.ticket.price)} = ${formatAmount(BigInt(event.ticket.price) * BigInt(n))}`;
    };
    quantity.addEventListener('input', showTotal);
    showTotal();
    const button = h('button', { type: 'submit', 'data-action': 'buy-ticket' }, where === 'gate' ? 'Buy a ticket' : 'Buy');
    return h('form', { class: 'row buy', onsubmit: async (e) => {
      e.preventDefault();
      const n = Number(quantity.value);
      if (!Number.isInteger(n) || n < 1 || n > max) { status.className = 'error'; status.textContent = `Choose 1 to ${max} tickets.`; return; }
      button.disabled = true;
      status.className = 'muted';
      status.textContent = 'Buying…';
      try {
        const answer = await authed(`/api/v1/events/${encodeURIComponent(event.id)}/tickets`, { method: 'POST', body: { quantity: n, id: crypto.randomUUID() } });
        const count = answer?.tickets?.length ?? n;
        status.className = 'ok';
        status.textContent = `Bought ${count} ticket${count === 1 ? '' : 's'}. Enjoy the show!`;
        await refresh(true);
      } catch (err) {
        status.className = 'error';
        status.textContent = err.type === 'insufficient-funds' || /balance|insufficient/i.test(err.message) ? `Not enough balance: ${errorText(err)}` : errorText(err);
      }
      button.disabled = false;
    } }, h('label', {}, 'Tickets', quantity), button, total);
  };

  const ticketsPanel = (withBuy) => {
    const held = tickets.length;
    return h('section', { class: 'panel', 'aria-label': 'Tickets' },
      h('h2', {}, 'Tickets'),
      h('div', { class: 'stats' },
        h('div', { class: 'stat' }, h('span', { class: 'muted' }, 'Price'), h('strong', { 'data-ticket-price': event.ticket.price }, formatAmount(event.ticket.price))),
        h('div', { class: 'stat' }, h('span', { class: 'muted' }, 'Sold'), h('strong', { 'data-tickets-sold': '' }, `${event.tickets_sold} of ${event.ticket.supply}`)),
        h('div', { class: 'stat' }, h('span', { class: 'muted' }, 'Left'), h('strong', { 'data-tickets-left': '' }, String(event.tickets_left)))),
      h('p', { class: 'muted' },
        `Up to ${event.ticket.per_wallet} per wallet`,
        event.ticket.sale_ends_at ? ` · on sale until ${when(event.ticket.sale_ends_at)}` : '',
        event.ticket.resale_max_bps != null ? ` · resale up to ${event.ticket.resale_max_bps / 100}% of face value` : ''),
      auth && !isCreator() ? h('p', { class: held ? 'ok' : 'muted', 'data-tickets-held': held }, held ? `You hold ${held} ticket${held === 1 ? '' : 's'}.` : 'You hold no ticket.') : null,
      withBuy ? buyForm('side') : null,
      withBuy ? status : null,
      h('p', {}, h('a', { href: `/market?event=${encodeURIComponent(event.id)}` }, 'Tickets and the collectible on the market')));
  };

  const gatePanel = () => h('section', { class: 'panel gate', 'data-ticket-required': '' },
    h('h2', {}, 'You need a ticket'),
    h('p', {}, event.state === 'live' ? 'The show is live for ticket holders. Buy a ticket to join the room: the video, the chat and the tip leaderboard.' : 'The room opens to ticket holders when the show starts.'),
    buyForm('gate'), status);

  // The room is mounted once: moving its elements would restart the player and the chat.
  const mountRoom = (head, description) => {
    room = {
      head: h('div', {}, head),
      tickets: h('div', {}, ticketsPanel(true)),
    };
    setMain(room.head, h('div', { class: 'watch room', 'data-room': '' },
      h('div', { class: 'watch-main' }, h('sw-player', { stream: event.stream_id, ticket: true }), description, room.tickets),
      h('aside', { class: 'watch-side', 'aria-label': 'Leaderboard, tips and chat' },
        h('sw-leaderboard', { event: event.id, stream: event.stream_id }),
        h('sw-tip', { stream: event.stream_id }),
        h('sw-chat', { stream: event.stream_id }))));
  };

  const collectiblePanel = async () => {
    if (!event.collectible_id) {
      return h('section', { class: 'panel', 'data-collectible': 'none' }, h('h2', {}, 'The collectible'),
        h('p', { class: 'muted' }, 'Nobody tipped during the show, so no collectible was minted.'));
    }
    let c;
    try {
      c = await request(`/api/v1/collectibles/${encodeURIComponent(event.collectible_id)}`);
    } catch (err) {
      return h('section', { class: 'panel' }, h('h2', {}, 'The collectible'), h('p', { class: 'error' }, errorText(err)));
    }
    let metadata = null;
    if (c.metadata_cid) {
      try { metadata = await (await fetch(`/ipfs/${c.metadata_cid}`)).json(); } catch { /* the link still works */ }
    }
    const mine = auth && c.owner?.toLowerCase() === auth.address;
    const owner = c.owner?.toLowerCase();
    return h('section', { class: 'panel collectible', 'data-collectible': c.id, 'data-collectible-owner': owner },
      h('h2', {}, 'The collectible'),
      h('div', { class: 'collectible-card' },
        h('div', { class: 'collectible-art', 'aria-hidden': 'true' }, '★'),
        h('div', {},
          h('strong', {}, metadata?.name ?? `${event.title}: top tipper`),
          metadata?.description ? h('p', { class: 'muted' }, metadata.description) : null,
          h('p', { class: mine ? 'ok' : null, 'data-holder': owner }, mine ? 'You hold this collectible.' : h('span', {}, 'Held by ', h('span', { title: c.owner }, shortAddress(c.owner)))),
          h('p', { class: 'muted' }, `Minted ${new Date(c.minted_at).toLocaleString()} for the show's top tipper · ${c.royalty_bps / 100}% royalty to the creator on resale`),
          h('p', { class: 'row' },
            c.metadata_cid ? h('a', { href: `/ipfs/${c.metadata_cid}`, 'data-metadata': c.metadata_cid }, 'Metadata (IPFS)') : null,
            c.archive_root_cid ? h('span', { class: 'muted', title: c.archive_root_cid }, `Archive ${c.archive_root_cid.slice(0, 14)}…`) : null,
            mine ? h('a', { href: `/market?sell=collectible:${encodeURIComponent(c.id)}` }, 'Sell on the market') : null))),
      c.history?.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Owner', 'Since', 'Price'].map((t) => h('th', {}, t)))),
        h('tbody', {}, c.history.map((o) => h('tr', {},
          h('td', { title: o.owner }, shortAddress(o.owner)), h('td', {}, new Date(o.since).toLocaleString()),
          h('td', { class: 'num' }, o.price != null ? formatAmount(o.price) : 'minted'))))) : null);
  };

  const render = async () => {
    const access = hasAccess();
    const head = h('div', { class: 'event-head' },
      h('div', { class: 'row spread' }, h('h1', { class: 'stream-title' }, event.title), eventBadge(event.state)),
      h('p', { class: 'muted' },
        'by ', h('a', { href: `/creators/${event.creator.toLowerCase()}`, title: event.creator }, shortAddress(event.creator)),
        ` · ${when(event.starts_at)} · ${formatDuration(event.duration_seconds)}`,
        event.category ? ` · ${event.category}` : ''),
      event.state === 'scheduled' ? h('p', { class: 'event-countdown' }, countdown(event.starts_at)) : null);
    const description = event.description ? h('p', { class: 'description' }, event.description) : null;
    if (onAir() && access) {
      if (room && room.head.isConnected) {
        room.head.replaceChildren(head);
        room.tickets.replaceChildren(ticketsPanel(true));
      } else {
        mountRoom(head, description);
      }
      return;
    }
    room = null;
    if (onAir()) {
      // No ticket: no room, and no playback.
      setMain(head, h('div', { class: 'watch' },
        h('div', { class: 'watch-main' }, gatePanel(), description),
        h('aside', { class: 'watch-side' }, ticketsPanel(false))));
      return;
    }
    const board = h('sw-leaderboard', { event: event.id, stream: event.stream_id });
    let mainPart;
    if (event.state === 'cancelled') {
      mainPart = h('section', { class: 'panel', 'data-cancelled': '' }, h('h2', {}, 'This event was cancelled'), h('p', {}, 'Every ticket was refunded to its holder.'));
    } else {
      const delivered = event.delivered_ms != null
        ? h('p', { class: 'muted', 'data-delivered-ms': event.delivered_ms }, `Delivered ${formatDuration(event.delivered_ms / 1000)} of ${formatDuration(event.duration_seconds)} scheduled.`)
        : null;
      mainPart = event.state === 'finalized'
        ? [h('section', { class: 'panel' }, h('h2', {}, 'The show is over'), delivered,
          event.finalized_at ? h('p', { class: 'muted' }, `Finalized ${new Date(event.finalized_at).toLocaleString()}.`) : null), await collectiblePanel()]
        : h('section', { class: 'panel', 'data-ended': '' }, h('h2', {}, 'The show has ended'), delivered,
          h('p', { class: 'muted' }, 'The leaderboard is final once the creator finalizes the event; its top tipper then gets the collectible.'));
    }
    setMain(head, h('div', { class: 'watch' },
      h('div', { class: 'watch-main' }, mainPart, description),
      h('aside', { class: 'watch-side' }, event.state === 'cancelled' ? null : board, ticketsPanel(false))));
  };

  /** Re-reads the event (and the visitor's tickets); renders again when what is shown changes. */
  const refresh = async (force = false) => {
    try {
      event = await request(`/api/v1/events/${encodeURIComponent(id)}`, { token: currentAuth()?.token });
    } catch { /* keep the last view */ }
    if (currentAuth()?.address !== auth?.address) room = null;
    if (force || currentAuth()?.address !== auth?.address) await loadTickets();
    const key = [event.state, auth?.address, tickets.length, event.collectible_id, event.tickets_left === 0].join('|');
    if (force || key !== shown) {
      shown = key;
      await render();
    } else {
      for (const el of document.querySelectorAll('[data-tickets-sold]')) el.textContent = `${event.tickets_sold} of ${event.ticket.supply}`;
      for (const el of document.querySelectorAll('[data-tickets-left]')) el.textContent = String(event.tickets_left);
    }
  };

  await loadTickets();
  shown = [event.state, auth?.address, tickets.length, event.collectible_id, event.tickets_left === 0].join('|');
  await render();
  let first = true;
  onAuth(() => { if (first) { first = false; return; } refresh(true); });
  // The show's state moves on its own (live, ended, finalized): read it now and then.
  setInterval(() => { if (!['finalized', 'cancelled'].includes(event.state) || currentAuth()?.address !== auth?.address) refresh(); }, 4000);
}

// ---- /market -------------------------------------------------------------------

export async function marketPage() {
  onAuth(() => renderMarket());
}

/** `notice`: what the last action did ({text, kind}), shown after the re-render. */
async function renderMarket(notice = null) {
  const params = new URLSearchParams(location.search);
  const auth = currentAuth();
  const query = new URLSearchParams({ state: 'open' });
  if (params.get('kind')) query.set('kind', params.get('kind'));
  if (params.get('event')) query.set('event', params.get('event'));
  let listings;
  let mine = [];
  let ownedTickets = [];
  let ownedCollectibles = [];
  try {
    const calls = [request(`/api/v1/market/listings?${query}`)];
    if (auth) {
      calls.push(
        authed(`/api/v1/market/listings?seller=${auth.address}&state=all`),
        authed(`/api/v1/accounts/${auth.address}/tickets`),
        authed(`/api/v1/accounts/${auth.address}/collectibles`),
      );
    }
    const [open, own, t, c] = await Promise.all(calls);
    listings = open.listings ?? [];
    mine = own?.listings ?? [];
    ownedTickets = (t?.tickets ?? []).filter((x) => !fullyRefunded(x));
    ownedCollectibles = c?.collectibles ?? [];
  } catch (err) {
    setMain(h('h1', {}, 'Market'), h('p', { class: 'error' }, `Cannot read the market: ${errorText(err)}`));
    return;
  }
  const events = await eventsById([...listings, ...mine].map((l) => l.event_id).concat(ownedTickets.map((t) => t.event_id), ownedCollectibles.map((c) => c.event_id)));
  const status = h('p', { role: 'status', 'data-market-status': '', class: notice?.kind ?? null }, notice?.text ?? '');
  const say = (text, kind = 'ok') => { status.className = kind; status.textContent = text; };
  const refresh = (text = null, kind = 'ok') => renderMarket(text ? { text, kind } : null);

  const itemText = (item, eventId) => h('span', {},
    h('span', { class: `chip kind-${item.kind}` }, item.kind === 'ticket' ? 'Ticket' : 'Collectible'), ' ',
    eventLink(events, eventId), ' ', h('small', { class: 'muted', title: item.id }, item.id.slice(0, 8)));

  const buy = async (listing, button) => {
    button.disabled = true;
    try {
      const answer = await authed(`/api/v1/market/listings/${encodeURIComponent(listing.id)}/buy`, { method: 'POST', body: { id: crypto.randomUUID() } });
      const sale = answer?.sale;
      refresh(`Bought for ${formatAmount(sale?.price ?? listing.price)}${sale ? ` (the seller gets ${formatAmount(sale.seller)}; fee ${formatAmount(sale.fee)}, royalty ${formatAmount(sale.royalty)})` : ''}.`);
    } catch (err) {
      say(errorText(err), 'error');
      button.disabled = false;
    }
  };
  const withdraw = async (listing, button) => {
    button.disabled = true;
    try {
      await authed(`/api/v1/market/listings/${encodeURIComponent(listing.id)}`, { method: 'DELETE' });
      refresh('Listing withdrawn.');
    } catch (err) {
      say(errorText(err), 'error');
      button.disabled = false;
    }
  };

  const rows = listings.map((l) => {
    const own = auth && l.seller?.toLowerCase() === auth.address;
    const action = h('button', { class: own ? 'secondary' : null, 'data-action': own ? 'withdraw-listing' : 'buy-listing', disabled: !auth && !own, title: auth ? null : 'Sign in to buy' }, own ? 'Withdraw' : 'Buy');
    action.addEventListener('click', () => (own ? withdraw(l, action) : buy(l, action)));
    return h('tr', { dataset: { listing: l.id, kind: l.item.kind } },
      h('td', {}, itemText(l.item, l.event_id)),
      h('td', { title: l.seller }, own ? 'you' : shortAddress(l.seller)),
      h('td', { class: 'num', 'data-price': l.price }, formatAmount(l.price)),
      h('td', {}, new Date(l.created_at).toLocaleString()),
      h('td', {}, action));
  });

  const kind = h('select', { name: 'kind', 'aria-label': 'Kind', onchange: () => {
    if (kind.value) params.set('kind', kind.value); else params.delete('kind');
    history.replaceState(null, '', params.size ? `/market?${params}` : '/market');
    refresh();
  } }, h('option', { value: '' }, 'Tickets and collectibles'), h('option', { value: 'ticket' }, 'Tickets'), h('option', { value: 'collectible' }, 'Collectibles'));
  kind.value = params.get('kind') ?? '';

  // What the visitor can list: tickets of shows still to come, and collectibles, not already listed.
  const listed = new Set(mine.filter((l) => l.state === 'open').map((l) => `${l.item.kind}:${l.item.id}`));
  const sellable = [
    ...ownedTickets.filter((t) => ['scheduled', 'live'].includes(events.get(t.event_id)?.state ?? 'scheduled')).map((t) => ({ kind: 'ticket', id: t.id, event_id: t.event_id, face: t.face_price })),
    ...ownedCollectibles.map((c) => ({ kind: 'collectible', id: c.id, event_id: c.event_id })),
  ].filter((x) => !listed.has(`${x.kind}:${x.id}`));
  let sellPanel = null;
  if (!auth) {
    sellPanel = h('section', { class: 'panel' }, h('h2', {}, 'Sell'), h('p', { class: 'muted' }, 'Sign in to buy, or to list a ticket or collectible you hold.'), h('sw-wallet'));
  } else if (!sellable.length) {
    sellPanel = h('section', { class: 'panel' }, h('h2', {}, 'Sell'), h('p', { class: 'muted' }, 'You hold nothing to list: tickets of upcoming shows and collectibles can be resold here.'));
  } else {
    const item = h('select', { name: 'item', 'aria-label': 'Item' }, sellable.map((x) => h('option', { value: `${x.kind}:${x.id}` },
      `${x.kind === 'ticket' ? 'Ticket' : 'Collectible'}: ${events.get(x.event_id)?.title ?? x.event_id} (${x.id.slice(0, 8)})`)));
    if (params.get('sell') && sellable.some((x) => `${x.kind}:${x.id}` === params.get('sell'))) item.value = params.get('sell');
    const price = h('input', { name: 'price', inputmode: 'decimal', placeholder: '0.00', size: 10, required: true });
    const hint = h('small', { class: 'muted', 'data-price-hint': '' });
    const showHint = () => {
      const x = sellable.find((s) => `${s.kind}:${s.id}` === item.value);
      const event = events.get(x?.event_id);
      if (x?.kind === 'ticket' && event) {
        const bps = BigInt(event.ticket.resale_max_bps ?? 10000);
        const face = BigInt(x.face ?? event.ticket.price);
        hint.textContent = `Face value ${formatAmount(face)}; resale up to ${formatAmount((face * bps) / 10000n)}.`;
      } else if (x?.kind === 'collectible' && event) {
        hint.textContent = `${(event.royalty_bps ?? 0) / 100}% of the price goes to the creator as royalty.`;
      } else hint.textContent = '';
    };
    item.addEventListener('change', showHint);
    showHint();
    sellPanel = h('section', { class: 'panel' }, h('h2', {}, 'Sell'),
      h('form', { class: 'row', onsubmit: async (e) => {
        e.preventDefault();
        let units;
        try { units = parseAmount(price.value); } catch (err) { say(errorText(err), 'error'); return; }
        const [itemKind, ...rest] = item.value.split(':');
        try {
          await authed('/api/v1/market/listings', { method: 'POST', body: { item: { kind: itemKind, id: rest.join(':') }, price: units.toString() } });
          refresh('Listed.');
        } catch (err) { say(errorText(err), 'error'); }
      } }, h('label', {}, 'Item', item), h('label', {}, 'Price (USDC)', price), h('button', { type: 'submit', 'data-action': 'list-item' }, 'List for sale')),
      hint);
  }

  const mineRows = mine.map((l) => {
    const w = l.state === 'open' ? h('button', { class: 'secondary', 'data-action': 'withdraw-listing' }, 'Withdraw') : null;
    w?.addEventListener('click', () => withdraw(l, w));
    return h('tr', { dataset: { listing: l.id, state: l.state } },
      h('td', {}, itemText(l.item, l.event_id)), h('td', { class: 'num' }, formatAmount(l.price)),
      h('td', {}, l.state, l.buyer ? ` to ${shortAddress(l.buyer)}` : ''), h('td', {}, w));
  });

  setMain(
    h('div', { class: 'discover-head' }, h('h1', {}, 'Market'), h('a', { href: '/events' }, 'Events')),
    h('p', { class: 'muted' }, 'Resold tickets (up to the price each event allows) and collectibles (the creator gets a royalty on every sale).'),
    h('div', { class: 'row filters' }, h('label', {}, 'Show', kind),
      params.get('event') ? h('span', { class: 'chip active' }, events.get(params.get('event'))?.title ?? 'One event', ' ',
        h('a', { href: '/market', 'aria-label': 'All events', style: 'color:inherit' }, '×')) : null),
    status,
    h('section', { class: 'panel', 'aria-label': 'Open listings' }, h('h2', {}, 'For sale'),
      rows.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Item', 'Seller', 'Price', 'Listed', ''].map((t) => h('th', {}, t)))), h('tbody', {}, rows))
        : h('p', { class: 'muted' }, 'Nothing for sale right now.')),
    sellPanel,
    auth && mine.length ? h('section', { class: 'panel', 'aria-label': 'Your listings' }, h('h2', {}, 'Your listings'),
      h('table', {}, h('thead', {}, h('tr', {}, ['Item', 'Price', 'State', ''].map((t) => h('th', {}, t)))), h('tbody', {}, mineRows))) : null,
  );
}

// ---- /account: tickets and collectibles -------------------------------------------

/** The "Tickets" and "Collectibles" sections of the account page. */
export function accountEventSections(auth) {
  const ticketsBox = h('section', { class: 'panel', 'aria-label': 'Tickets', 'data-account-tickets': '' }, h('h2', {}, 'Tickets'), h('p', { class: 'muted' }, 'Loading…'));
  const collectiblesBox = h('section', { class: 'panel', 'aria-label': 'Collectibles', 'data-account-collectibles': '' }, h('h2', {}, 'Collectibles'), h('p', { class: 'muted' }, 'Loading…'));
  (async () => {
    let tickets;
    let collectibles;
    const [t, c] = await Promise.allSettled([
      authed(`/api/v1/accounts/${auth.address}/tickets`),
      authed(`/api/v1/accounts/${auth.address}/collectibles`),
    ]);
    if (t.status === 'fulfilled') tickets = t.value.tickets ?? [];
    if (c.status === 'fulfilled') collectibles = c.value.collectibles ?? [];
    const events = await eventsById([...(tickets ?? []).map((x) => x.event_id), ...(collectibles ?? []).map((x) => x.event_id)]);
    if (!tickets) {
      ticketsBox.replaceChildren(h('h2', {}, 'Tickets'), h('p', { class: 'error' }, errorText(t.reason)));
    } else if (!tickets.length) {
      ticketsBox.replaceChildren(h('h2', {}, 'Tickets'), h('p', { class: 'muted' }, 'No tickets yet: ', h('a', { href: '/events' }, 'find a show'), '.'));
    } else {
      ticketsBox.replaceChildren(h('h2', {}, 'Tickets'), h('table', {},
        h('thead', {}, h('tr', {}, ['Event', 'When', 'Paid', 'Refunded', 'State', ''].map((x) => h('th', {}, x)))),
        h('tbody', {}, tickets.map((ticket) => {
          const event = events.get(ticket.event_id);
          const refunded = refundedUnits(ticket);
          const resellable = event && ['scheduled', 'live'].includes(event.state) && !fullyRefunded(ticket);
          return h('tr', { dataset: { ticket: ticket.id, event: ticket.event_id } },
            h('td', {}, eventLink(events, ticket.event_id)),
            h('td', {}, event ? when(event.starts_at) : ''),
            h('td', { class: 'num' }, formatAmount(ticket.price_paid)),
            h('td', { class: 'num' }, refunded ? formatAmount(refunded) : '—'),
            h('td', {}, event ? eventBadge(event.state) : ''),
            h('td', {}, resellable ? h('a', { href: `/market?sell=ticket:${encodeURIComponent(ticket.id)}` }, 'Resell') : null));
        }))));
    }
    if (!collectibles) {
      collectiblesBox.replaceChildren(h('h2', {}, 'Collectibles'), h('p', { class: 'error' }, errorText(c.reason)));
    } else if (!collectibles.length) {
      collectiblesBox.replaceChildren(h('h2', {}, 'Collectibles'), h('p', { class: 'muted' }, 'None yet: the top tipper of a show gets its collectible.'));
    } else {
      collectiblesBox.replaceChildren(h('h2', {}, 'Collectibles'), h('ul', { class: 'collectibles' }, collectibles.map((col) => h('li', { class: 'collectible-card', dataset: { collectible: col.id } },
        h('div', { class: 'collectible-art', 'aria-hidden': 'true' }, '★'),
        h('div', {},
          h('strong', {}, eventLink(events, col.event_id)),
          h('p', { class: 'muted' }, `Minted ${new Date(col.minted_at).toLocaleString()} · creator ${shortAddress(col.creator)}`),
          h('p', { class: 'row' },
            col.metadata_cid ? h('a', { href: `/ipfs/${col.metadata_cid}` }, 'Metadata') : null,
            h('a', { href: `/market?sell=collectible:${encodeURIComponent(col.id)}` }, 'Sell')))))));
    }
  })();
  return [ticketsBox, collectiblesBox];
}

// ---- /studio: events ---------------------------------------------------------------

function localInput(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function eventForm(onCreated) {
  const field = (label, input) => h('label', {}, label, input);
  const title = h('input', { name: 'event-title', required: true, maxlength: 200 });
  const description = h('textarea', { name: 'event-description', rows: 2, maxlength: 2000 });
  const category = h('input', { name: 'event-category', placeholder: 'music, talk…' });
  const starts = h('input', { name: 'starts-at', type: 'datetime-local', required: true, value: localInput(new Date(Date.now() + 3_600_000)) });
  const minutes = h('input', { name: 'duration', type: 'number', min: 1, max: 1440, value: 60, required: true });
  const price = h('input', { name: 'ticket-price', inputmode: 'decimal', value: '5.00', size: 8, required: true });
  const supply = h('input', { name: 'supply', type: 'number', min: 1, value: 100, required: true });
  const perWallet = h('input', { name: 'per-wallet', type: 'number', min: 1, value: 4 });
  const saleEnds = h('input', { name: 'sale-ends-at', type: 'datetime-local' });
  const resale = h('input', { name: 'resale-max', type: 'number', min: 0, max: 655, value: 100 });
  const royalty = h('input', { name: 'royalty', type: 'number', min: 0, max: 100, step: '0.01', value: 5 });
  const error = h('p', { class: 'error', role: 'alert' });
  return h('form', { class: 'form event-form', onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      const ticket = {
        price: parseAmount(price.value).toString(),
        supply: Number(supply.value),
        per_wallet: Number(perWallet.value) || 4,
        resale_max_bps: Math.round(Number(resale.value) * 100),
      };
      if (saleEnds.value) ticket.sale_ends_at = new Date(saleEnds.value).toISOString();
      const body = {
        title: title.value.trim(), starts_at: new Date(starts.value).toISOString(),
        duration_seconds: Math.round(Number(minutes.value) * 60), royalty_bps: Math.round(Number(royalty.value) * 100), ticket,
      };
      if (description.value.trim()) body.description = description.value.trim();
      if (category.value.trim()) body.category = category.value.trim();
      const created = await authed('/api/v1/events', { method: 'POST', body });
      onCreated(created);
    } catch (err) {
      error.textContent = errorText(err);
    }
  } },
  h('h3', {}, 'New event'),
  field('Title', title), field('Description', description),
  h('div', { class: 'row' }, field('Category', category), field('Starts', starts), field('Duration (minutes)', minutes)),
  h('div', { class: 'row' }, field('Ticket price (USDC)', price), field('Tickets', supply), field('Per wallet', perWallet), field('Sales end (optional)', saleEnds)),
  h('div', { class: 'row' }, field('Resale cap (% of face value)', resale), field('Collectible royalty (%)', royalty)),
  h('button', { type: 'submit', 'data-action': 'create-event' }, 'Create event'), error);
}

function eventKeyPanel(event) {
  const key = h('input', { readonly: true, type: 'password', value: '', placeholder: '••••••••••••••••', 'aria-label': 'Stream key', size: 40 });
  const rtmpUrl = h('input', { readonly: true, value: '', size: 40, 'aria-label': 'Server (RTMP URL)' });
  const status = h('span', { class: 'muted', role: 'status' });
  let secret = event.stream_key ?? '';
  authed(`/api/v1/streams/${encodeURIComponent(event.stream_id)}/key`).then((answer) => {
    rtmpUrl.value = answer.rtmp_url ?? '';
    secret = answer.stream_key ?? secret;
  }, () => { if (!secret) status.textContent = 'The stream key is shown to the event\'s creator only.'; });
  const reveal = h('button', { class: 'secondary', type: 'button', onclick: () => {
    const hidden = key.type === 'password';
    key.type = hidden ? 'text' : 'password';
    key.value = hidden ? secret : '';
    reveal.textContent = hidden ? 'Hide' : 'Reveal';
  } }, 'Reveal');
  const copy = h('button', { class: 'secondary', type: 'button', onclick: async () => {
    try { await navigator.clipboard.writeText(secret); status.textContent = 'Copied.'; } catch (err) { status.textContent = `Copy failed: ${errorText(err)}`; }
  } }, 'Copy');
  return h('div', { class: 'panel' }, h('h3', {}, 'Go live'),
    h('p', { class: 'muted' }, 'Publish to the event\'s own stream from OBS or ffmpeg when the show starts; ticket holders watch it in the room.'),
    h('label', {}, 'Server (RTMP URL)', rtmpUrl),
    h('div', { class: 'row' }, h('label', {}, 'Stream key', key), reveal, copy), status);
}

/** An event's ticket money: sales, refunds and (once finalized) what was released to the creator. */
function ticketMoney(event) {
  const box = h('dl', { class: 'event-money', 'data-event-money': event.id });
  const show = (sold, gross, refunded) => {
    const rows = [
      ['Tickets sold', 'sold', `${sold} of ${event.ticket.supply}`],
      ['Ticket sales', 'gross', formatAmount(gross), gross],
    ];
    if (event.state === 'finalized' || event.state === 'cancelled' || refunded > 0n) rows.push(['Refunded to holders', 'refunded', formatAmount(refunded), refunded]);
    if (event.released != null) rows.push(['Released to you (before fee and splits)', 'released', formatAmount(event.released), event.released]);
    box.replaceChildren(...rows.map(([dt, key, dd, units]) => h('div', {}, h('dt', { class: 'muted' }, dt), h('dd', { 'data-money': key, 'data-base-units': units?.toString() ?? null }, dd))));
  };
  show(event.tickets_sold ?? 0, BigInt(event.ticket.price) * BigInt(event.tickets_sold ?? 0), 0n);
  // Every ticket sold (the creator's view): what was paid and refunded, to the unit.
  authed(`/api/v1/events/${encodeURIComponent(event.id)}/tickets`).then(({ tickets }) => {
    const gross = tickets.reduce((sum, t) => sum + BigInt(t.price_paid), 0n);
    const refunded = tickets.reduce((sum, t) => sum + refundedUnits(t), 0n);
    show(tickets.length, gross, refunded);
  }, () => {});
  return box;
}

function eventManager(event, onChange) {
  const status = h('p', { role: 'status' });
  const act = (label, path, confirmText, action) => {
    const button = h('button', { class: action === 'cancel-event' ? 'secondary' : null, 'data-action': action, type: 'button' }, label);
    button.addEventListener('click', async () => {
      if (confirmText && !confirm(confirmText)) return;
      button.disabled = true;
      try {
        const updated = await authed(`/api/v1/events/${encodeURIComponent(event.id)}/${path}`, { method: 'POST' });
        onChange(updated);
      } catch (err) {
        status.className = 'error';
        status.textContent = errorText(err);
        button.disabled = false;
      }
    });
    return button;
  };
  const ended = event.state === 'ended';
  return h('div', { class: 'event-manage', dataset: { manageEvent: event.id } },
    h('div', { class: 'row spread' }, h('h3', {}, event.title), eventBadge(event.state), h('a', { href: `/events/${encodeURIComponent(event.id)}` }, 'Open event page')),
    h('p', { class: 'muted' }, `${when(event.starts_at)} · ${formatDuration(event.duration_seconds)}`,
      event.delivered_ms != null ? ` · delivered ${formatDuration(event.delivered_ms / 1000)}` : '',
      event.finalized_at ? ` · finalized ${new Date(event.finalized_at).toLocaleString()}` : ''),
    ticketMoney(event),
    event.state === 'scheduled' || event.state === 'live' ? h('div', { class: 'studio-grid' },
      h('div', {}, h('sw-player', { stream: event.stream_id, ticket: true })),
      h('div', {}, eventKeyPanel(event), h('sw-leaderboard', { event: event.id, stream: event.stream_id }))) : null,
    event.state === 'finalized' && event.collectible_id ? h('p', {}, h('a', { href: `/events/${encodeURIComponent(event.id)}` }, 'See the collectible')) : null,
    h('div', { class: 'row' },
      ended ? act('Finalize', 'finalize', 'Finalize the event? The leaderboard freezes, the top tipper gets the collectible and the ticket money is settled.', 'finalize-event') : null,
      event.state === 'scheduled' ? act('Cancel event', 'cancel', 'Cancel the event? Every ticket is refunded.', 'cancel-event') : null),
    ended ? h('p', { class: 'muted' }, 'The show has ended: finalize it to freeze the leaderboard, mint the collectible and settle the ticket money.') : null,
    status);
}

/** The studio's "Events" section: create events, their sales, going live, finalizing. */
export function eventStudio(auth) {
  const list = h('div', { 'data-studio-events': '' }, h('p', { class: 'muted' }, 'Loading your events…'));
  const detail = h('div');
  const creating = h('div');
  let selected = new URLSearchParams(location.search).get('event');
  const show = (event) => {
    selected = event.id;
    detail.replaceChildren(eventManager(event, (updated) => { show(updated); load(); }));
  };
  const load = async () => {
    let events;
    try {
      events = ((await authed('/api/v1/events')).events ?? []).filter((e) => e.creator?.toLowerCase() === auth.address);
    } catch (err) {
      list.replaceChildren(h('p', { class: 'error' }, `Cannot list your events: ${errorText(err)}`));
      return;
    }
    if (!events.length) { list.replaceChildren(h('p', { class: 'muted' }, 'No events yet.')); return; }
    events.sort((a, b) => Date.parse(b.starts_at) - Date.parse(a.starts_at));
    list.replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, ['Event', 'State', 'Starts', 'Sold', 'Sales', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, events.map((e) => h('tr', { dataset: { event: e.id }, class: e.id === selected ? 'active' : null },
        h('td', {}, h('a', { href: `/events/${encodeURIComponent(e.id)}` }, e.title)),
        h('td', {}, eventBadge(e.state)),
        h('td', {}, when(e.starts_at)),
        h('td', { class: 'num' }, `${e.tickets_sold}/${e.ticket.supply}`),
        h('td', { class: 'num' }, formatAmount(BigInt(e.ticket.price) * BigInt(e.tickets_sold ?? 0))),
        h('td', {}, h('button', { class: 'secondary', type: 'button', 'data-action': 'manage-event', onclick: async () => {
          // The full view (with the stream key) is the creator's.
          try { show(await authed(`/api/v1/events/${encodeURIComponent(e.id)}`)); } catch { show(e); }
        } }, 'Manage')))))));
    const current = events.find((e) => e.id === selected);
    if (current && !detail.firstChild) {
      try { show(await authed(`/api/v1/events/${encodeURIComponent(current.id)}`)); } catch { show(current); }
    }
  };
  const newButton = h('button', { type: 'button', 'data-action': 'new-event', onclick: () => {
    creating.replaceChildren(eventForm((created) => { creating.replaceChildren(); show(created); load(); }));
  } }, 'New event');
  load();
  return h('section', { class: 'panel events-studio', 'aria-label': 'Events' },
    h('div', { class: 'row spread' }, h('h2', {}, 'Events'), newButton),
    h('p', { class: 'muted' }, 'Ticketed live shows: sell tickets, go live to ticket holders, and finalize to settle the ticket money and mint the top tipper\'s collectible.'),
    creating, list, detail);
}
