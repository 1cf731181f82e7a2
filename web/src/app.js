// StreamWeave's pages: discovery, watch, library, a creator's page, events, market, membership, studio and account. They use the
// same public API and web components as any other site would.
import {
  ApiError, authed, currentAuth, demoWalletAvailable, formatAmount, formatDuration, h, importDemoKey,
  onAuth, parseAmount, pricePerMinute, request, shortAddress, signIn,
} from '/assets/streamweave.js';
import { VideoUpload, formatBytes } from './upload.js';
import { cameraPanel } from './golive.js';
import { accountEventSections, eventPage, eventStudio, eventsPage, marketPage } from './events.js';
import { membersNote, membershipPage, membershipStudio, poolEarnings, tierLimits, tierPrice } from './membership.js';

const main = document.getElementById('main');
const page = document.body.dataset.page;

function setMain(...children) {
  main.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
}

function errorText(err) {
  return err instanceof ApiError || err instanceof Error ? err.message : String(err);
}

function stateBadge(state) {
  const text = state === 'live' ? 'Live' : state === 'ended' ? 'Ended' : 'Offline';
  return h('span', { class: `badge ${state}` }, text);
}

function priceText(stream) {
  if (stream.access === 'ticket') return 'Ticketed event';
  if (stream.access === 'members') return 'Members only';
  return stream.access === 'per_second' && stream.price ? `${formatAmount(pricePerMinute(stream.price))}/min` : 'Free';
}

// ---- / : discovery ---------------------------------------------------------

/** A stream's badge: Live, Ended, Offline, or Video for an uploaded video. */
function streamBadge(stream) {
  return stream.source === 'upload' ? h('span', { class: 'badge video' }, 'Video') : stateBadge(stream.state);
}

/** Whether a recording is gone: removed, or past its retention (removal follows shortly). */
function gone(stream) {
  if (stream.expired_at) return true;
  return stream.retention_days != null && stream.ended_at != null && Date.parse(stream.ended_at) + stream.retention_days * 86_400_000 <= Date.now();
}

/** Milliseconds of media: a video's duration, or how long a recording's broadcast lasted. */
function durationMs(stream) {
  if (stream.duration_ms != null) return stream.duration_ms;
  if (stream.started_at && stream.ended_at) return Math.max(0, Date.parse(stream.ended_at) - Date.parse(stream.started_at));
  return null;
}

/**
 * A stream's card: a link to watch it, then (outside it: links do not nest)
 * its creator, linking to their page unless `owner` is false.
 */
function card(stream, { owner = true } = {}) {
  const thumb = h('img', { src: `/api/v1/streams/${stream.id}/thumbnail.jpg`, alt: '', loading: 'lazy', width: 320, height: 180 });
  const fallback = h('span', { class: 'thumb-fallback', 'aria-hidden': 'true' }, stream.title.slice(0, 1).toUpperCase());
  thumb.addEventListener('error', () => thumb.replaceWith(fallback));
  return h('li', { class: 'card-item' },
    h('a', { class: 'card', href: `/watch/${stream.id}`, dataset: { stream: stream.id } },
      h('div', { class: 'thumb' }, thumb, streamBadge(stream),
        stream.state === 'ended' && durationMs(stream) != null ? h('span', { class: 'duration' }, formatDuration(durationMs(stream) / 1000)) : null),
      h('div', { class: 'card-body' },
        h('strong', { class: 'card-title' }, stream.title),
        h('span', { class: 'card-meta' },
          h('span', {}, priceText(stream)),
          stream.state === 'live' ? h('span', {}, `${stream.viewers} watching`) : null,
          stream.views != null ? h('span', { 'data-views': stream.views }, viewsText(stream.views)) : null,
          stream.category ? h('span', { class: 'chip' }, stream.category) : null))),
    !owner ? null : stream.owner
      ? h('a', { class: 'card-owner', href: creatorHref(stream.owner), title: stream.owner }, `by ${shortAddress(stream.owner)}`)
      : h('span', { class: 'card-owner muted' }, 'by StreamWeave'));
}

async function discovery() {
  const params = new URLSearchParams(location.search);
  const search = h('input', { type: 'search', name: 'q', value: params.get('q') ?? '', placeholder: 'Title or creator address', 'aria-label': 'Search streams' });
  const form = h('form', { class: 'search', role: 'search', onsubmit: (e) => { e.preventDefault(); go({ q: search.value.trim() || null, category: null, tag: null }); } },
    search, h('button', { type: 'submit' }, 'Search'));
  const go = (changes) => {
    for (const [key, value] of Object.entries(changes)) {
      if (value == null) params.delete(key); else params.set(key, value);
    }
    history.pushState(null, '', `/?${params}`);
    discovery();
  };
  const query = new URLSearchParams();
  for (const key of ['q', 'category', 'tag']) if (params.get(key)) query.set(key, params.get(key));
  query.set('limit', '100');
  let streams;
  let all;
  try {
    [streams, all] = await Promise.all([request(`/api/v1/streams?${query}`), request('/api/v1/streams?limit=200')]);
  } catch (err) {
    setMain(h('p', { class: 'error' }, `Cannot list streams: ${errorText(err)}`));
    return;
  }
  const categories = [...new Set(all.map((s) => s.category).filter(Boolean))].sort();
  const tags = [...new Set(all.flatMap((s) => s.tags))].sort();
  const chip = (key, value) => h('button', {
    class: params.get(key) === value ? 'chip active' : 'chip', 'aria-pressed': String(params.get(key) === value),
    onclick: () => go({ [key]: params.get(key) === value ? null : value }),
  }, key === 'tag' ? `#${value}` : value);
  const section = (title, list, empty) => h('section', { 'aria-label': title },
    h('h2', {}, title),
    list.length ? h('ul', { class: 'cards' }, list.map(card)) : h('p', { class: 'muted' }, empty));
  const live = streams.filter((s) => s.state === 'live').sort((a, b) => b.viewers - a.viewers);
  const upcoming = streams.filter((s) => s.state === 'idle' && s.source !== 'upload');
  const ended = streams.filter((s) => s.state === 'ended' && !gone(s) && !(s.source === 'upload' && s.end_error)).slice(0, 24);
  const filtering = query.has('q') || query.has('category') || query.has('tag');
  setMain(
    h('div', { class: 'discover-head' }, h('h1', {}, 'Discover'), form),
    categories.length ? h('div', { class: 'chips', role: 'group', 'aria-label': 'Categories' }, categories.map((c) => chip('category', c))) : null,
    tags.length ? h('div', { class: 'chips', role: 'group', 'aria-label': 'Tags' }, tags.map((t) => chip('tag', t))) : null,
    filtering ? h('p', {}, h('a', { href: '/', onclick: (e) => { e.preventDefault(); go({ q: null, category: null, tag: null }); } }, 'Clear filters')) : null,
    section('Live now', live, filtering ? 'Nothing live matches.' : 'Nobody is live right now.'),
    upcoming.length ? section('Starting soon', upcoming, '') : null,
    section('Recently ended', ended, 'No recordings yet.'),
    h('p', {}, h('a', { href: '/library' }, 'Browse the library of videos and recordings')),
  );
}

// ---- /watch/{id} -----------------------------------------------------------

async function watch() {
  const id = decodeURIComponent(location.pathname.split('/')[2] || '');
  let stream;
  try {
    stream = await request(`/api/v1/streams/${encodeURIComponent(id)}`);
  } catch (err) {
    setMain(h('h1', {}, 'Stream not found'), h('p', {}, err.status === 404 ? 'No stream has this address.' : errorText(err)), h('a', { href: '/' }, 'Discover streams'));
    return;
  }
  document.title = `${stream.title} · StreamWeave`;
  let video = null;
  if (stream.source === 'upload') {
    try { video = await request(`/api/v1/videos/${encodeURIComponent(id)}`, { token: currentAuth()?.token }); } catch { /* the stream view is enough to play */ }
  }
  const duration = durationMs(video ?? stream);
  let player;
  if (video && video.status !== 'ready') {
    player = h('div', { class: 'panel center', 'data-video-status': video.status },
      h('strong', {}, video.status === 'failed' ? 'This video could not be processed' : 'This video is being processed'),
      h('p', { class: 'muted' }, video.status === 'failed' ? (video.failure_reason || '') : 'It plays here once it is ready.'));
    if (video.status === 'processing') setTimeout(() => { if (location.pathname.startsWith('/watch/')) watch(); }, 3000);
  } else {
    // `?t=SECONDS` (the watch history's resume links) starts a video or recording there.
    const start = Number(new URLSearchParams(location.search).get('t'));
    player = h('sw-player', { stream: stream.id, start: Number.isFinite(start) && start > 0 ? String(Math.floor(start)) : null });
  }
  setMain(h('div', { class: 'watch' },
    h('div', { class: 'watch-main' },
      player,
      h('h1', { class: 'stream-title' }, stream.title),
      h('p', { class: 'muted' },
        stream.owner ? h('span', {}, 'by ', h('a', { href: creatorHref(stream.owner), title: stream.owner }, shortAddress(stream.owner)), ' · ') : '', priceText(stream),
        stream.preview_seconds ? ` · ${stream.preview_seconds} s free preview` : '',
        stream.state === 'ended' && duration != null ? h('span', { 'data-duration-ms': duration }, ` · ${formatDuration(duration / 1000)}`) : '',
        stream.category ? ` · ${stream.category}` : ''),
      stream.tags.length ? h('p', { class: 'chips' }, stream.tags.map((t) => h('a', { class: 'chip', href: `/?tag=${encodeURIComponent(t)}` }, `#${t}`))) : null,
      stream.access === 'ticket' ? eventNote(stream) : null,
      stream.access === 'members' ? membersNote(stream) : null,
      stream.description ? h('p', { class: 'description' }, stream.description) : null),
    h('aside', { class: 'watch-side', 'aria-label': 'Chat and tips' },
      stream.owner ? h('sw-tip', { stream: stream.id }) : null,
      h('sw-chat', { stream: stream.id }))));
}

/** An event's stream: a link to its event page (tickets, the room, the leaderboard). */
function eventNote(stream) {
  const note = h('p', { class: 'muted', 'data-event-note': '' }, 'This stream is a ticketed event.');
  request('/api/v1/events').then(({ events }) => {
    const event = (events ?? []).find((e) => e.stream_id === stream.id);
    if (event) note.replaceChildren('This stream is a ticketed event: ', h('a', { href: `/events/${encodeURIComponent(event.id)}` }, 'tickets and the room'), '.');
  }, () => {});
  return note;
}

// ---- /library ---------------------------------------------------------------

// The server filters by access and length and sorts newest or most watched
// first (`access=`, `duration=`, `sort=`); the other orders and filters
// apply to what it answered.
const ACCESSES = { free: 'Free', per_second: 'Pay per second', members: 'Members', ticket: 'Ticket' };
const DURATIONS = { short: 'Under 4 min', medium: '4–20 min', long: 'Over 20 min' };

const byCreated = (a, b) => Date.parse(a.created_at) - Date.parse(b.created_at);
const SORTS = {
  newest: { label: 'Newest', server: true },
  most_watched: { label: 'Most watched', server: true },
  oldest: { label: 'Oldest', compare: byCreated },
  longest: { label: 'Longest', compare: (a, b) => (durationMs(b) ?? 0) - (durationMs(a) ?? 0) },
  shortest: { label: 'Shortest', compare: (a, b) => (durationMs(a) ?? 0) - (durationMs(b) ?? 0) },
  title: { label: 'Title', compare: (a, b) => a.title.localeCompare(b.title) },
};

/** A query value if it is one of `options`' keys, else null. */
function known(options, value) {
  return value && Object.hasOwn(options, value) ? value : null;
}

/**
 * Every ready video and kept recording matching `params`' server filters
 * (`owner`, `access`, `duration`), with durations, in the server's order.
 */
async function libraryItems(params) {
  const query = new URLSearchParams({ state: 'ended', limit: '200' });
  if (params.get('owner')) query.set('owner', params.get('owner').trim().toLowerCase());
  if (known(ACCESSES, params.get('access'))) query.set('access', params.get('access'));
  if (known(DURATIONS, params.get('duration'))) query.set('duration', params.get('duration'));
  if (params.get('sort') === 'most_watched') query.set('sort', 'most_watched');
  const [streams, videos] = await Promise.all([
    request(`/api/v1/streams?${query}`),
    request(`/api/v1/videos?${query}`),
  ]);
  const ready = new Map(videos.filter((v) => v.status === 'ready').map((v) => [v.id, v]));
  const items = streams.filter((s) => !gone(s) && (s.source !== 'upload' || ready.has(s.id))).map((s) => ready.get(s.id) ?? s);
  // Videos beyond the streams' page are still part of the library. Both
  // lists come in the same order and the streams' page holds every video
  // ranked before its last item, so these come after it: the order stays
  // the server's.
  const listed = new Set(items.map((i) => i.id));
  for (const video of ready.values()) if (!gone(video) && !listed.has(video.id)) items.push(video);
  return items;
}

/** The filters applied to what the server answered. */
function libraryMatches(item, params) {
  const q = (params.get('q') ?? '').trim().toLowerCase();
  if (q && !item.title.toLowerCase().includes(q) && !(item.owner ?? '').includes(q) && !item.description.toLowerCase().includes(q)) return false;
  if (params.get('category') && item.category !== params.get('category')) return false;
  if (params.get('tag') && !item.tags.includes(params.get('tag'))) return false;
  if (params.get('kind') && item.source !== params.get('kind')) return false;
  return true;
}

/** Items in the order `sortKey` asks for: the server's, or sorted here. */
function sorted(items, sortKey) {
  const sort = SORTS[known(SORTS, sortKey) ?? 'newest'];
  return sort.server ? items : [...items].sort(sort.compare);
}

/** A labelled select of `options` ({value: text}) showing `params`' value of `name`. */
function filterSelect(name, label, options, params, onchange) {
  const el = h('select', { name, 'aria-label': label, onchange: () => onchange(el.value) },
    Object.entries(options).map(([value, text]) => h('option', { value }, text)));
  const wanted = params.get(name) ?? '';
  el.value = Object.hasOwn(options, wanted) ? wanted : Object.keys(options)[0];
  return h('label', {}, label, el);
}

let libraryTurn = 0;
/** Renders the library page shown now (set once its list is in). */
let libraryShown = null;

async function library() {
  const turn = ++libraryTurn;
  let items;
  try {
    items = await libraryItems(new URLSearchParams(location.search));
  } catch (err) {
    if (turn === libraryTurn) setMain(h('h1', {}, 'Library'), h('p', { class: 'error' }, `Cannot list the library: ${errorText(err)}`));
    return;
  }
  if (turn !== libraryTurn) return;
  // Read after the fetch: the search may have changed meanwhile.
  const params = new URLSearchParams(location.search);
  const owner = (params.get('owner') ?? '').trim().toLowerCase();
  const results = h('div', { 'aria-live': 'polite', 'data-library': '' });
  const filteredByServer = Boolean(known(ACCESSES, params.get('access')) || known(DURATIONS, params.get('duration')));
  const categories = [...new Set([...items.map((i) => i.category).filter(Boolean), params.get('category')].filter(Boolean))].sort();
  const tags = [...new Set([...items.flatMap((i) => i.tags), params.get('tag')].filter(Boolean))].sort();
  const search = h('input', { type: 'search', name: 'q', value: params.get('q') ?? '', placeholder: 'Title, description or creator', 'aria-label': 'Search the library' });
  // The address holds the filters. Typing or choosing while the list
  // loads again goes to the page being replaced; it still counts, since
  // every change is written to the address and the page shown renders
  // from it, its controls included.
  const render = () => {
    const params = new URLSearchParams(location.search);
    // The box shows the address's search, except while what is being
    // typed there is that search (spaces and caret kept).
    const q = params.get('q') ?? '';
    if (document.activeElement !== search || search.value.trim() !== q) search.value = q;
    for (const el of main.querySelectorAll('.filters select')) {
      const wanted = params.get(el.name) ?? '';
      el.value = [...el.options].some((o) => o.value === wanted) ? wanted : el.options[0].value;
    }
    const shown = sorted(items.filter((i) => libraryMatches(i, params)), params.get('sort'));
    results.replaceChildren(
      h('p', { class: 'muted', 'data-count': shown.length }, `${shown.length} of ${items.length}`),
      shown.length ? h('ul', { class: 'cards' }, shown.map((i) => card(i))) : h('p', { class: 'muted', 'data-empty': '' }, items.length || filteredByServer ? 'Nothing matches these filters.' : 'Nothing here yet: videos and recordings of ended streams appear here.'));
  };
  // Access, length and order are the server's: changing them lists again.
  const update = (name, value) => {
    const params = new URLSearchParams(location.search);
    const before = params.get(name);
    if (value && !(name === 'sort' && value === 'newest')) params.set(name, value); else params.delete(name);
    history.replaceState(null, '', params.size ? `/library?${params}` : '/library');
    if (name === 'access' || name === 'duration' || (name === 'sort' && (before === 'most_watched' || value === 'most_watched'))) {
      library();
    } else {
      libraryShown?.();
    }
  };
  const select = (name, label, options) => filterSelect(name, label, options, params, (value) => update(name, value));
  search.addEventListener('input', () => update('q', search.value.trim()));
  // The control in use when the list comes in keeps the focus in the page
  // replacing it: the select just changed, or the search box being typed
  // into meanwhile (with its text and caret), so no keystroke is lost.
  const focused = main.contains(document.activeElement) ? document.activeElement : null;
  setMain(
    h('div', { class: 'discover-head' }, h('h1', {}, owner ? `Library of ${shortAddress(owner)}` : 'Library'),
      h('form', { class: 'search', role: 'search', onsubmit: (e) => { e.preventDefault(); update('q', search.value.trim()); } }, search)),
    h('div', { class: 'row filters', role: 'group', 'aria-label': 'Filters' },
      select('kind', 'Type', { '': 'Videos and recordings', upload: 'Videos', live: 'Recordings' }),
      select('category', 'Category', { '': 'Any', ...Object.fromEntries(categories.map((c) => [c, c])) }),
      select('tag', 'Tag', { '': 'Any', ...Object.fromEntries(tags.map((t) => [t, `#${t}`])) }),
      select('access', 'Access', { '': 'Any', ...ACCESSES }),
      select('duration', 'Duration', { '': 'Any', ...DURATIONS }),
      select('sort', 'Sort by', Object.fromEntries(Object.entries(SORTS).map(([k, d]) => [k, d.label])))),
    owner ? h('p', {}, h('a', { href: creatorHref(owner) }, 'Their creator page'), ' · ', h('a', { href: '/library' }, 'Everyone\'s videos and recordings')) : null,
    results,
  );
  libraryShown = render;
  const twin = focused?.name ? main.querySelector(`[name="${CSS.escape(focused.name)}"]`) : null;
  if (twin === search) {
    search.value = focused.value;
    search.focus();
    search.setSelectionRange(focused.selectionStart, focused.selectionEnd, focused.selectionDirection);
  } else {
    twin?.focus();
  }
  render();
}

// ---- /creators/{address} -----------------------------------------------------

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

/** A creator's page. */
function creatorHref(address) {
  return `/creators/${address.toLowerCase()}`;
}

function viewsText(views) {
  const n = Number(views ?? 0);
  return `${n.toLocaleString('en')} view${n === 1 ? '' : 's'}`;
}

async function creator() {
  let raw = '';
  try { raw = decodeURIComponent(location.pathname.split('/')[2] || '').trim(); } catch { raw = location.pathname.split('/')[2] || ''; }
  if (!ADDRESS.test(raw)) {
    document.title = 'Creator not found · StreamWeave';
    setMain(h('h1', {}, 'Creator not found'),
      h('p', { class: 'error', 'data-creator-error': '' }, raw
        ? `"${raw}" is not a creator's address: an address is 0x followed by 40 hexadecimal digits.`
        : 'This link names no creator.'),
      h('p', {}, h('a', { href: '/library' }, 'Browse the library of videos and recordings')));
    return;
  }
  const address = raw.toLowerCase();
  const short = shortAddress(address);
  document.title = `${short} · StreamWeave`;
  const section = (title, key, ...children) => h('section', { class: 'creator-section', 'aria-label': title, dataset: { creatorSection: key } }, h('h2', {}, title), ...children);
  const failed = (what, err) => h('p', { class: 'error' }, `Cannot load ${what}: ${errorText(err)}`);
  const summary = h('p', { class: 'muted', 'data-creator-summary': '' });

  // Their videos and recordings, sorted newest or most watched first (`?sort=`).
  const params = new URLSearchParams(location.search);
  const results = h('div', { 'aria-live': 'polite' }, h('p', { class: 'muted', role: 'status' }, 'Loading…'));
  let listing = 0;
  const list = async () => {
    const turn = ++listing;
    const sort = params.get('sort') === 'most_watched' ? 'most_watched' : 'newest';
    let items;
    try {
      items = await libraryItems(new URLSearchParams({ owner: address, sort }));
    } catch (err) {
      if (turn === listing) results.replaceChildren(failed('their videos and recordings', err));
      return null;
    }
    if (turn !== listing) return null;
    results.replaceChildren(items.length
      ? h('ul', { class: 'cards', 'data-count': items.length }, items.map((i) => card(i, { owner: false })))
      : h('p', { class: 'muted', 'data-empty': '' }, 'No videos or recordings yet.'));
    return items;
  };
  const sortSelect = filterSelect('sort', 'Sort by', { newest: 'Newest', most_watched: 'Most watched' }, params, (value) => {
    if (value === 'most_watched') params.set('sort', value); else params.delete('sort');
    history.replaceState(null, '', params.size ? `${location.pathname}?${params}` : location.pathname);
    list();
  });

  const live = h('div', {}, h('p', { class: 'muted', role: 'status' }, 'Loading…'));
  const tiers = h('div', {}, h('p', { class: 'muted', role: 'status' }, 'Loading…'));
  const membershipHref = `/membership?creator=${address}`;
  const hue = parseInt(address.slice(2, 6), 16) % 360;
  setMain(
    h('div', { class: 'creator-head' },
      h('span', { class: 'creator-avatar', 'aria-hidden': 'true', style: `background: linear-gradient(135deg, hsl(${hue} 60% 45%), hsl(${(hue + 90) % 360} 55% 35%))` }, address.slice(2, 4).toUpperCase()),
      h('div', {},
        h('h1', { title: address, 'data-creator': address }, short),
        summary),
      h('p', { class: 'creator-links' },
        h('a', { href: membershipHref }, 'Memberships'), ' · ',
        h('a', { href: `/library?owner=${address}` }, 'Search their library'))),
    section('Live now', 'live', live),
    section('Videos and recordings', 'videos', h('div', { class: 'row filters' }, sortSelect), results),
    section('Memberships', 'tiers', tiers),
  );

  const [liveNow, items, offered] = await Promise.all([
    request(`/api/v1/streams?owner=${address}&state=live&limit=50`).catch((err) => err),
    list(),
    request(`/api/v1/tiers?offerer=${address}`).then((r) => r.tiers ?? []).catch((err) => err),
  ]);
  if (!main.contains(live)) return;

  if (liveNow instanceof Error) {
    live.replaceChildren(failed('their live streams', liveNow));
  } else {
    const streams = [...liveNow].sort((a, b) => b.viewers - a.viewers);
    live.replaceChildren(streams.length
      ? h('ul', { class: 'cards', 'data-count': streams.length }, streams.map((s) => card(s, { owner: false })))
      : h('p', { class: 'muted', 'data-empty': '' }, 'Not live right now.'));
  }

  if (offered instanceof Error) {
    tiers.replaceChildren(failed('their memberships', offered));
  } else if (!offered.length) {
    tiers.replaceChildren(h('p', { class: 'muted', 'data-empty': '' }, 'This creator offers no memberships yet.'));
  } else {
    const byPrice = (a, b) => (BigInt(a.price) < BigInt(b.price) ? -1 : BigInt(a.price) > BigInt(b.price) ? 1 : 0);
    tiers.replaceChildren(
      h('p', { class: 'muted' }, 'Members watch this creator\'s members-only streams without paying by the second. ',
        h('a', { href: membershipHref, 'data-action': 'memberships' }, 'Join on the membership page'), '.'),
      h('ul', { class: 'tiers' }, [...offered].sort(byPrice).map((tier) => h('li', { class: 'tier-card', dataset: { tier: tier.id } },
        h('div', { class: 'row spread' }, h('strong', { class: 'tier-name' }, tier.name), tier.suspended ? h('span', { class: 'badge' }, 'Not sold now') : null),
        h('p', { class: 'tier-price', 'data-price': tier.price }, tierPrice(tier)),
        h('p', { class: 'muted' }, tierLimits(tier)),
        tier.description ? h('p', { class: 'description' }, tier.description) : null,
        tier.suspended ? null : h('a', { href: membershipHref }, 'Join')))));
  }

  const parts = [];
  if (Array.isArray(liveNow) && liveNow.length) parts.push('Live now');
  if (items) {
    parts.push(`${items.length} ${items.length === 1 ? 'video or recording' : 'videos and recordings'}`);
    parts.push(viewsText(items.reduce((sum, i) => sum + Number(i.views ?? 0), 0)));
  }
  summary.textContent = parts.join(' · ');
}

// ---- /studio ---------------------------------------------------------------

function signInPrompt(what) {
  return h('div', { class: 'panel center' }, h('h1', {}, what), h('p', {}, 'Sign in with a wallet to continue.'), h('sw-wallet'));
}

/** Title, description, category, tags, access and price inputs, as for streams and videos. */
function detailFields(stream) {
  const field = (label, input) => h('label', {}, label, input);
  const title = h('input', { name: 'title', required: true, maxlength: 200, value: stream?.title ?? '' });
  const description = h('textarea', { name: 'description', rows: 3, maxlength: 2000 }, stream?.description ?? '');
  const category = h('input', { name: 'category', value: stream?.category ?? '', placeholder: 'music, gaming, talk…' });
  const tags = h('input', { name: 'tags', value: (stream?.tags ?? []).join(', '), placeholder: 'comma separated' });
  const access = h('select', { name: 'access' }, h('option', { value: 'free' }, 'Free'), h('option', { value: 'per_second' }, 'Paid by the second'),
    h('option', { value: 'members' }, 'Members (memberships)'));
  access.value = stream?.access ?? 'per_second';
  const tierPicker = memberTierPicker(stream);
  const perMinute = h('input', { name: 'price', inputmode: 'decimal', value: stream?.price ? formatAmount(pricePerMinute(stream.price), { symbol: false }) : '0.05' });
  const preview = h('input', { name: 'preview', type: 'number', min: 0, max: 3600, value: stream?.preview_seconds ?? 0 });
  const priceFields = h('div', { class: 'row' }, field('Price per minute (USDC)', perMinute), field('Free preview (seconds)', preview));
  const sync = () => {
    priceFields.hidden = access.value !== 'per_second';
    tierPicker.el.hidden = access.value !== 'members';
    if (access.value === 'members') tierPicker.load();
  };
  access.addEventListener('change', sync);
  sync();
  return {
    title,
    nodes: [field('Title', title), field('Description', description),
      h('div', { class: 'row' }, field('Category', category), field('Tags', tags), field('Access', access)), priceFields, tierPicker.el],
    /** The request body's details; throws on a price that is not an amount. */
    body() {
      const body = {
        title: title.value, description: description.value, category: category.value.trim(),
        tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean), access: access.value,
      };
      if (access.value === 'per_second') {
        body.price = { amount: parseAmount(perMinute.value).toString(), period_seconds: 60 };
        body.preview_seconds = Number(preview.value) || 0;
      }
      if (access.value === 'members') {
        body.tiers = tierPicker.chosen();
        if (!body.tiers.length) throw new Error('Choose which memberships admit to it.');
      }
      if (!stream && !body.category) delete body.category;
      return body;
    },
  };
}

/** Which memberships admit to a members stream: any StreamWeave membership, and the creator's own tiers. */
function memberTierPicker(stream) {
  const chosen = new Set(stream?.tiers?.length ? stream.tiers : ['platform']);
  const list = h('div', { class: 'row tier-picker' });
  const el = h('fieldset', { class: 'tiers-field', 'data-tier-picker': '' },
    h('legend', {}, 'Members of'), list,
    h('small', { class: 'muted' }, 'Make tiers of your own under "Memberships" below.'));
  const box = (value, text) => {
    const input = h('input', { type: 'checkbox', name: 'tiers', value, checked: chosen.has(value) });
    input.addEventListener('change', () => { if (input.checked) chosen.add(value); else chosen.delete(value); });
    return h('label', { class: 'check' }, input, text);
  };
  let loading = null;
  const load = () => {
    if (loading) return loading;
    const auth = currentAuth();
    list.replaceChildren(box('platform', 'Any StreamWeave membership'));
    loading = (auth ? request(`/api/v1/tiers?offerer=${auth.address}`) : Promise.resolve({ tiers: [] })).then(({ tiers }) => {
      for (const tier of tiers ?? []) list.append(box(tier.id, `${tier.name} (${tierPrice(tier)}, up to ${tier.max_height}p)`));
      // A tier the stream names that is not listed (a platform tier picked through the API).
      for (const id of chosen) if (id !== 'platform' && !(tiers ?? []).some((t) => t.id === id)) list.append(box(id, `Tier ${id}`));
    }, () => {}).finally(() => { setTimeout(() => { loading = null; }, 0); });
    return loading;
  };
  return { el, load, chosen: () => [...chosen] };
}

function streamForm(stream, onSaved) {
  const details = detailFields(stream);
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'panel form', onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      const body = details.body();
      const saved = stream
        ? await authed(`/api/v1/streams/${stream.id}`, { method: 'PATCH', body })
        : await authed('/api/v1/streams', { method: 'POST', body });
      onSaved(saved);
    } catch (err) {
      error.textContent = errorText(err);
    }
  } },
  h('h2', {}, stream ? 'Edit stream' : 'New stream'),
  details.nodes, h('button', { type: 'submit' }, stream ? 'Save' : 'Create stream'), error);
  return form;
}

function keyPanel(stream) {
  const key = h('input', { readonly: true, type: 'password', value: '', placeholder: '••••••••••••••••', 'aria-label': 'Stream key', size: 40 });
  const rtmpUrl = h('input', { readonly: true, value: '', size: 40, 'data-rtmp-url': '', 'aria-label': 'Server (RTMP URL)' });
  const status = h('span', { class: 'muted', role: 'status' });
  let loaded = false;
  let secret = '';
  const load = async () => {
    if (loaded) return;
    const answer = await authed(`/api/v1/streams/${stream.id}/key`);
    secret = answer.stream_key;
    rtmpUrl.value = answer.rtmp_url;
    loaded = true;
  };
  // The server's RTMP address comes with the key; the key stays hidden until revealed.
  load().catch((err) => { status.textContent = errorText(err); });
  const reveal = h('button', { class: 'secondary', onclick: async () => {
    try { await load(); } catch (err) { status.textContent = errorText(err); return; }
    const hidden = key.type === 'password';
    key.type = hidden ? 'text' : 'password';
    key.value = hidden ? secret : '';
    reveal.textContent = hidden ? 'Hide' : 'Reveal';
  } }, 'Reveal');
  const copy = h('button', { class: 'secondary', onclick: async () => {
    try { await load(); await navigator.clipboard.writeText(secret); status.textContent = 'Copied.'; } catch (err) { status.textContent = `Copy failed: ${errorText(err)}`; }
  } }, 'Copy');
  const rotate = h('button', { class: 'secondary', onclick: async () => {
    if (!confirm('Make a new stream key? The old one stops working.')) return;
    try {
      const answer = await authed(`/api/v1/streams/${stream.id}/key/rotate`, { method: 'POST' });
      secret = answer.stream_key;
      if (key.type === 'text') key.value = secret;
      loaded = true;
      status.textContent = 'New key made; update your encoder.';
    } catch (err) { status.textContent = errorText(err); }
  } }, 'Rotate');
  return h('div', { class: 'panel' }, h('h2', {}, 'Go live'),
    h('p', { class: 'muted' }, 'OBS: Settings › Stream › Service "Custom", then the server and key below.'),
    h('label', {}, 'Server (RTMP URL)', rtmpUrl),
    h('div', { class: 'row' }, h('label', {}, 'Stream key', key), reveal, copy, rotate), status);
}

async function streamStats(stream) {
  try {
    const stats = await authed(`/api/v1/streams/${stream.id}/stats`);
    return `${stats.unique_viewers} viewers · ${stats.paid_viewer_seconds} paid s · ${formatAmount(stats.net)} earned`;
  } catch {
    return '';
  }
}

function splitEditor(auth) {
  const rows = h('div', { class: 'splits' });
  const status = h('p', { role: 'status' });
  const addRow = (address = '', share = 1) => {
    const row = h('div', { class: 'row' },
      h('label', {}, 'Recipient address', h('input', { name: 'address', value: address, size: 42 })),
      h('label', {}, 'Share', h('input', { name: 'share', type: 'number', min: 1, value: share })),
      h('button', { type: 'button', class: 'secondary', onclick: () => row.remove() }, 'Remove'));
    rows.append(row);
  };
  authed('/api/v1/accounts/me/revenue-policy').then((policy) => {
    status.textContent = `Platform fee ${policy.platform_fee_bps / 100}%; the rest splits by share.`;
    for (const r of policy.recipients) addRow(r.address, r.share);
  }).catch((err) => { status.textContent = errorText(err); });
  return h('form', { class: 'panel form', onsubmit: async (e) => {
    e.preventDefault();
    const recipients = [...rows.children].map((row) => ({ address: row.querySelector('[name=address]').value.trim(), share: Number(row.querySelector('[name=share]').value) }));
    try {
      await authed('/api/v1/accounts/me/revenue-policy', { method: 'PUT', body: { recipients } });
      status.className = 'ok';
      status.textContent = 'Saved: channels opened from now on split this way.';
    } catch (err) {
      status.className = 'error';
      status.textContent = errorText(err);
    }
  } },
  h('h2', {}, 'Revenue split'), h('p', { class: 'muted' }, `Collaborators share what viewers pay you (${shortAddress(auth.address)} is you).`),
  rows, h('div', { class: 'row' }, h('button', { type: 'button', class: 'secondary', onclick: () => addRow() }, 'Add collaborator'), h('button', { type: 'submit' }, 'Save split')), status);
}

// ---- /studio: videos -------------------------------------------------------

function processingText(video) {
  if (video.status === 'ready') return `Ready${video.duration_ms != null ? ` · ${formatDuration(video.duration_ms / 1000)}` : ''}`;
  if (video.status === 'failed') return `Failed: ${video.failure_reason || 'the video could not be processed'}`;
  const p = video.progress;
  if (!p) return 'Waiting to be processed…';
  const parts = [`Processing ${p.percent}%`];
  if (p.speed) parts.push(`${p.speed}× speed`);
  if (p.eta_seconds != null) parts.push(`about ${formatDuration(p.eta_seconds)} left`);
  return parts.join(' · ');
}

/** The upload form, its progress, the processing of the new video and the creator's videos. */
function videoStudio(auth) {
  const file = h('input', { type: 'file', name: 'file', accept: 'video/*', required: true });
  const details = detailFields(null);
  const formError = h('p', { class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit', 'data-action': 'upload' }, 'Upload');
  const bar = h('progress', { max: 100, value: 0, 'aria-label': 'Upload progress' });
  const uploadText = h('span', { class: 'muted', role: 'status', 'data-upload-progress': '' });
  const pauseButton = h('button', { type: 'button', class: 'secondary', 'data-action': 'pause-upload' }, 'Pause');
  const resumeButton = h('button', { type: 'button', class: 'secondary', 'data-action': 'resume-upload', hidden: true }, 'Resume');
  const cancelButton = h('button', { type: 'button', class: 'secondary', 'data-action': 'cancel-upload' }, 'Cancel');
  const progressBox = h('div', { class: 'upload-progress', hidden: true, 'data-upload-state': 'idle' },
    bar, h('div', { class: 'row spread' }, uploadText, h('div', { class: 'row' }, pauseButton, resumeButton, cancelButton)));
  const processBar = h('progress', { max: 100, 'aria-label': 'Processing progress' });
  const processText = h('span', { role: 'status', 'data-processing': '' });
  const processLink = h('a', { hidden: true }, 'Watch');
  const processBox = h('div', { class: 'upload-progress', hidden: true }, processBar, h('div', { class: 'row spread' }, processText, processLink));
  const list = h('div', { 'data-videos': '' }, h('p', { class: 'muted' }, 'Loading your videos…'));
  let upload = null;
  let tracking = null;

  const setBusy = (busy) => { submit.disabled = busy; file.disabled = busy; };
  const showUploadState = (state) => {
    progressBox.dataset.uploadState = state;
    pauseButton.hidden = state !== 'uploading';
    resumeButton.hidden = state !== 'paused' && state !== 'failed';
    cancelButton.hidden = !['uploading', 'paused', 'failed'].includes(state);
    if (state === 'paused') uploadText.textContent = `Paused at ${bar.value}%: resume to go on. After leaving this page, upload the same file again to go on from here.`;
    if (state === 'cancelled') { uploadText.textContent = 'Upload cancelled.'; setBusy(false); }
    if (state === 'done') uploadText.textContent = 'Uploaded. Making the video…';
  };

  const track = (video) => {
    tracking = video.id;
    processBox.hidden = false;
    processLink.hidden = true;
    const show = (v) => {
      processBox.dataset.videoStatus = v.status;
      processText.className = v.status === 'failed' ? 'error' : v.status === 'ready' ? 'ok' : '';
      processText.textContent = `${v.title}: ${processingText(v)}`;
      if (v.progress) processBar.value = v.progress.percent; else if (v.status === 'processing') processBar.removeAttribute('value');
      if (v.status !== 'processing') processBar.value = v.status === 'ready' ? 100 : 0;
      processLink.hidden = v.status !== 'ready';
      processLink.href = `/watch/${v.id}`;
    };
    show(video);
    const poll = async () => {
      if (tracking !== video.id || current !== instance) return;
      try {
        const latest = await authed(`/api/v1/videos/${encodeURIComponent(video.id)}`);
        show(latest);
        if (latest.status !== 'processing') { refreshList(); return; }
      } catch (err) {
        if (err.status === 404) { processText.textContent = `${video.title}: removed.`; refreshList(); return; }
        processText.textContent = `${video.title}: ${errorText(err)} (trying again)`;
      }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  };

  const remove = async (video, button) => {
    const what = video.status === 'processing' ? 'Stop processing and remove' : 'Remove';
    if (!confirm(`${what} "${video.title}"?`)) return;
    button.disabled = true;
    try {
      await authed(`/api/v1/videos/${encodeURIComponent(video.id)}`, { method: 'DELETE' });
      if (tracking === video.id) { tracking = null; processBox.hidden = true; }
    } catch (err) {
      formError.textContent = errorText(err);
    }
    refreshList();
  };

  const refreshList = async () => {
    let videos;
    try {
      videos = await authed(`/api/v1/videos?owner=${auth.address}&limit=200`);
    } catch (err) {
      list.replaceChildren(h('p', { class: 'error' }, `Cannot list your videos: ${errorText(err)}`));
      return;
    }
    videos = videos.filter((v) => !gone(v));
    if (!tracking) {
      const processing = videos.find((v) => v.status === 'processing');
      if (processing) track(processing);
    }
    if (!videos.length) { list.replaceChildren(h('p', { class: 'muted' }, 'No videos yet.')); return; }
    list.replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, ['Video', 'Status', 'Access', 'Uploaded', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, videos.map((v) => {
        const del = h('button', { class: 'secondary', 'data-action': 'delete-video' }, v.status === 'processing' ? 'Cancel' : 'Delete');
        del.addEventListener('click', () => remove(v, del));
        return h('tr', { dataset: { video: v.id, status: v.status } },
          h('td', {}, v.status === 'ready' ? h('a', { href: `/watch/${v.id}` }, v.title) : v.title),
          h('td', { class: v.status === 'failed' ? 'error' : null }, processingText(v)),
          h('td', {}, priceText(v)),
          h('td', {}, new Date(v.created_at).toLocaleString()),
          h('td', {}, del));
      }))));
  };

  const makeVideo = async (uploadId, body) => {
    try {
      const video = await authed('/api/v1/videos', { method: 'POST', body: { ...body, upload_id: uploadId } });
      progressBox.hidden = true;
      file.value = '';
      details.title.value = '';
      track(video);
      refreshList();
    } catch (err) {
      formError.textContent = `The upload finished, but the video was not made: ${errorText(err)}`;
    }
    setBusy(false);
  };

  pauseButton.addEventListener('click', () => upload?.pause());
  resumeButton.addEventListener('click', () => { formError.textContent = ''; upload?.resume(currentAuth()); });
  cancelButton.addEventListener('click', async () => { await upload?.cancel(); upload = null; });

  const form = h('form', { class: 'form', onsubmit: async (e) => {
    e.preventDefault();
    formError.textContent = '';
    const chosen = file.files[0];
    if (!chosen) { formError.textContent = 'Choose a video file.'; return; }
    let body;
    try { body = details.body(); } catch (err) { formError.textContent = errorText(err); return; }
    const account = currentAuth();
    if (!account) { formError.textContent = 'Sign in first.'; return; }
    setBusy(true);
    bar.value = 0;
    progressBox.hidden = false;
    uploadText.textContent = `Starting ${chosen.name} (${formatBytes(chosen.size)})…`;
    upload = new VideoUpload(chosen, account, {
      onState: showUploadState,
      onProgress: (sent, total) => {
        bar.value = total ? Math.floor((sent / total) * 100) : 0;
        progressBox.dataset.uploadPercent = String(bar.value);
        if (upload?.state === 'uploading') uploadText.textContent = `${upload.resumed ? 'Going on with the earlier upload: ' : ''}${formatBytes(sent)} of ${formatBytes(total)} (${bar.value}%)`;
      },
      onError: (text) => { formError.textContent = `Upload stopped: ${text}`; },
      onDone: (uploadId) => makeVideo(uploadId, body),
    });
    try {
      await upload.start();
      if (upload.resumed) uploadText.textContent = `Going on with the earlier upload of ${chosen.name}…`;
    } catch (err) {
      formError.textContent = errorText(err);
      setBusy(false);
    }
  } },
  h('label', {}, 'Video file', file), details.nodes, submit);

  const el = h('section', { class: 'panel videos', 'aria-label': 'Videos' },
    h('h2', {}, 'Upload a video'),
    h('p', { class: 'muted' }, 'Uploads resume where they stopped. Viewers can seek in a video; paid videos are paid by the second like streams.'),
    form, progressBox, formError, processBox,
    h('h2', {}, 'Your videos'), list);
  const instance = { address: auth.address, el };
  current = instance;
  refreshList();
  return instance;
}

let current = null;

/** The videos section survives re-renders of the studio, so an upload goes on while streams are selected. */
function videosFor(auth) {
  return current?.address === auth.address ? current.el : videoStudio(auth).el;
}

async function studio() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get('demo-key') && (await demoWalletAvailable())) {
    // The demo hands over its creator's key in the fragment (never sent to the server).
    importDemoKey(hash.get('demo-key'));
    history.replaceState(null, '', location.pathname + location.search);
    try { await signIn('demo'); } catch (err) { console.error(err); }
  }
  onAuth((auth) => renderStudio(auth));
}

async function renderStudio(auth) {
  if (!auth) { setMain(signInPrompt('Studio')); return; }
  let streams;
  try {
    streams = await request(`/api/v1/streams?owner=${auth.address}&limit=200`);
  } catch (err) {
    setMain(h('p', { class: 'error' }, errorText(err)));
    return;
  }
  const selectedId = new URLSearchParams(location.search).get('stream') ?? streams.find((s) => s.state === 'live')?.id ?? streams[0]?.id;
  const select = (id) => { history.replaceState(null, '', `/studio?stream=${id}`); renderStudio(currentAuth()); };
  const list = h('ul', { class: 'stream-list' }, streams.map((s) => {
    const stats = h('small', { class: 'muted' });
    if (s.state === 'ended') streamStats(s).then((text) => { stats.textContent = text; });
    return h('li', {}, h('button', { class: s.id === selectedId ? 'stream-item active' : 'stream-item', 'aria-current': s.id === selectedId ? 'true' : null, onclick: () => select(s.id) },
      stateBadge(s.state), h('span', {}, s.title), h('small', { class: 'muted' }, priceText(s)), stats));
  }));
  const creating = h('div');
  const newButton = h('button', { onclick: () => creating.replaceChildren(streamForm(null, (created) => select(created.id))) }, 'New stream');
  const selected = streams.find((s) => s.id === selectedId);
  const detail = h('div', { class: 'studio-detail' });
  if (selected) {
    detail.append(
      h('div', { class: 'row spread' }, h('h1', {}, selected.title), stateBadge(selected.state), h('a', { href: `/watch/${selected.id}` }, 'Open watch page')),
      h('div', { class: 'studio-grid' },
        h('div', {}, h('sw-player', { stream: selected.id, preview: true }), h('sw-earnings', { stream: selected.id })),
        h('div', {}, keyPanel(selected), selected.state !== 'ended' && selected.source !== 'upload' ? cameraPanel(selected) : null, h('sw-chat', { stream: selected.id }))),
      streamForm(selected, () => renderStudio(currentAuth())));
  } else {
    detail.append(h('p', { class: 'muted' }, 'No streams yet: create one, then publish to it from OBS or ffmpeg.'));
  }
  setMain(h('div', { class: 'studio' },
    h('nav', { class: 'studio-side', 'aria-label': 'Your streams' }, h('h2', {}, 'Your streams'), newButton, creating, list, splitEditor(auth)),
    detail), membershipStudio(auth), poolEarnings(auth), eventStudio(auth), videosFor(auth));
}

// ---- /account --------------------------------------------------------------

async function account() {
  onAuth((auth) => renderAccount(auth));
}

async function renderAccount(auth) {
  if (!auth) { setMain(signInPrompt('Account')); return; }
  const base = `/api/v1/accounts/${auth.address}`;
  let balances;
  let channels;
  let transfers;
  try {
    [balances, channels, transfers] = await Promise.all([authed(`${base}/balances`), authed(`${base}/channels`), authed(`${base}/transfers?limit=100`)]);
  } catch (err) {
    setMain(h('p', { class: 'error' }, errorText(err)));
    return;
  }
  const refresh = () => renderAccount(currentAuth());
  const status = h('p', { role: 'status' });
  const fail = (err) => { status.className = 'error'; status.textContent = errorText(err); };
  const money = (label, key, units) => h('div', { class: 'stat' }, h('span', { class: 'muted' }, label), h('strong', { 'data-balance': key, 'data-base-units': units }, formatAmount(units)));
  const faucet = (await demoWalletAvailable())
    ? h('button', { class: 'secondary', onclick: () => request('/api/v1/dev/faucet', { method: 'POST', body: { address: auth.address, amount: '10000000' } }).then(refresh, fail) }, 'Add 10 USDC (dev faucet)')
    : null;
  const channelRows = channels.map((c) => h('tr', {},
    h('td', { title: c.id }, shortAddress(c.id)),
    h('td', {}, c.payer === auth.address ? `to ${shortAddress(c.payee)}` : `from ${shortAddress(c.payer)}`),
    h('td', { class: 'num' }, formatAmount(c.deposit)), h('td', { class: 'num' }, formatAmount(c.redeemed)),
    h('td', {}, c.state, c.settle_at ? ` (settles ${new Date(c.settle_at).toLocaleTimeString()})` : ''),
    h('td', {}, c.state === 'open' ? h('button', { class: 'secondary', onclick: () => authed(`/api/v1/channels/${c.id}/close`, { method: 'POST' }).then(refresh, fail) }, 'Close') : null)));
  const transferRows = transfers.map((t) => h('tr', {},
    h('td', {}, new Date(t.time).toLocaleString()), h('td', {}, t.kind.replaceAll('_', ' ')),
    h('td', { class: `num ${t.direction === 'in' ? 'ok' : ''}` }, `${t.direction === 'in' ? '+' : '−'}${formatAmount(t.amount)}`),
    h('td', { class: 'muted' }, t.channel ? shortAddress(t.channel) : '')));
  const csv = h('button', { class: 'secondary', onclick: async () => {
    try {
      const res = await fetch(`${base}/transfers?format=csv&limit=1000`, { headers: { authorization: `Bearer ${auth.token}` } });
      if (!res.ok) throw new Error(`the server answered ${res.status}`);
      const url = URL.createObjectURL(await res.blob());
      h('a', { href: url, download: `streamweave-${auth.address}.csv` }).click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) { fail(err); }
  } }, 'Export CSV');
  const withdrawAmount = h('input', { name: 'withdraw', inputmode: 'decimal', placeholder: '0.00', size: 10 });
  const withdrawFrom = h('select', { name: 'from' }, h('option', { value: 'earned' }, 'Earned'), h('option', { value: 'available' }, 'Available'));
  const threshold = h('input', { name: 'threshold', inputmode: 'decimal', placeholder: 'off', size: 10 });
  setMain(
    h('h1', {}, 'Account'),
    h('p', { class: 'muted' }, auth.address),
    h('section', { class: 'panel' }, h('h2', {}, 'Balances'),
      h('div', { class: 'stats' }, money('Available', 'available', balances.available), money('In channels (escrow)', 'escrowed', balances.escrowed), money('Earned', 'earned', balances.earned),
        balances.earned_on_chain != null ? money('Earned on chain (withdraw from the escrow)', 'earned_on_chain', balances.earned_on_chain) : null), faucet),
    h('section', { class: 'panel' }, h('h2', {}, 'Withdraw'),
      h('form', { class: 'row', onsubmit: (e) => {
        e.preventDefault();
        let amount;
        try { amount = parseAmount(withdrawAmount.value); } catch (err) { fail(err); return; }
        authed('/api/v1/withdrawals', { method: 'POST', body: { amount: amount.toString(), from: withdrawFrom.value } }).then(refresh, fail);
      } }, h('label', {}, 'Amount (USDC)', withdrawAmount), h('label', {}, 'From', withdrawFrom), h('button', { type: 'submit' }, 'Withdraw')),
      h('form', { class: 'row', onsubmit: (e) => {
        e.preventDefault();
        let value = null;
        try { if (threshold.value.trim()) value = parseAmount(threshold.value).toString(); } catch (err) { fail(err); return; }
        authed('/api/v1/accounts/me/payout-threshold', { method: 'PUT', body: { threshold: value } }).then(() => { status.className = 'ok'; status.textContent = value ? 'Earnings pay out automatically at that threshold.' : 'Automatic payouts are off.'; }, fail);
      } }, h('label', {}, 'Automatic payout threshold (USDC)', threshold), h('button', { type: 'submit', class: 'secondary' }, 'Save'))),
    status,
    accountEventSections(auth),
    h('section', { class: 'panel' }, h('h2', {}, 'Channels'),
      channels.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Channel', 'With', 'Deposit', 'Redeemed', 'State', ''].map((t) => h('th', {}, t)))), h('tbody', {}, channelRows)) : h('p', { class: 'muted' }, 'No channels yet: they open when you watch a paid stream.')),
    h('section', { class: 'panel' }, h('div', { class: 'row spread' }, h('h2', {}, 'History'), csv),
      transfers.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Time', 'What', 'Amount', 'Channel'].map((t) => h('th', {}, t)))), h('tbody', {}, transferRows)) : h('p', { class: 'muted' }, 'Nothing yet.')),
  );
}

const pages = { index: discovery, watch, library, creator, studio, account, events: eventsPage, event: eventPage, market: marketPage, membership: membershipPage };
window.addEventListener('popstate', () => { if (page === 'index') discovery(); });
pages[page]?.().catch((err) => setMain(h('p', { class: 'error' }, errorText(err))));
