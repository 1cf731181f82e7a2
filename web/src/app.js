// StreamWeave's pages: discovery, watch, studio and account. They use the
// same public API and web components as any other site would.
import {
  ApiError, authed, currentAuth, demoWalletAvailable, formatAmount, h, importDemoKey, onAuth,
  parseAmount, pricePerMinute, request, shortAddress, signIn,
} from '/assets/streamweave.js';

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
  return stream.access === 'per_second' && stream.price ? `${formatAmount(pricePerMinute(stream.price))}/min` : 'Free';
}

// ---- / : discovery ---------------------------------------------------------

function card(stream) {
  const thumb = h('img', { src: `/api/v1/streams/${stream.id}/thumbnail.jpg`, alt: '', loading: 'lazy', width: 320, height: 180 });
  const fallback = h('span', { class: 'thumb-fallback', 'aria-hidden': 'true' }, stream.title.slice(0, 1).toUpperCase());
  thumb.addEventListener('error', () => thumb.replaceWith(fallback));
  return h('li', {},
    h('a', { class: 'card', href: `/watch/${stream.id}`, dataset: { stream: stream.id } },
      h('div', { class: 'thumb' }, thumb, stateBadge(stream.state)),
      h('div', { class: 'card-body' },
        h('strong', { class: 'card-title' }, stream.title),
        h('span', { class: 'muted' }, stream.owner ? shortAddress(stream.owner) : 'StreamWeave'),
        h('span', { class: 'card-meta' },
          h('span', {}, priceText(stream)),
          stream.state === 'live' ? h('span', {}, `${stream.viewers} watching`) : null,
          stream.category ? h('span', { class: 'chip' }, stream.category) : null))));
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
  const upcoming = streams.filter((s) => s.state === 'idle');
  const ended = streams.filter((s) => s.state === 'ended' && !s.expired_at).slice(0, 24);
  const filtering = query.has('q') || query.has('category') || query.has('tag');
  setMain(
    h('div', { class: 'discover-head' }, h('h1', {}, 'Discover'), form),
    categories.length ? h('div', { class: 'chips', role: 'group', 'aria-label': 'Categories' }, categories.map((c) => chip('category', c))) : null,
    tags.length ? h('div', { class: 'chips', role: 'group', 'aria-label': 'Tags' }, tags.map((t) => chip('tag', t))) : null,
    filtering ? h('p', {}, h('a', { href: '/', onclick: (e) => { e.preventDefault(); go({ q: null, category: null, tag: null }); } }, 'Clear filters')) : null,
    section('Live now', live, filtering ? 'Nothing live matches.' : 'Nobody is live right now.'),
    upcoming.length ? section('Starting soon', upcoming, '') : null,
    section('Recently ended', ended, 'No recordings yet.'),
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
  setMain(h('div', { class: 'watch' },
    h('div', { class: 'watch-main' },
      h('sw-player', { stream: stream.id }),
      h('h1', { class: 'stream-title' }, stream.title),
      h('p', { class: 'muted' },
        stream.owner ? `by ${shortAddress(stream.owner)} · ` : '', priceText(stream),
        stream.preview_seconds ? ` · ${stream.preview_seconds} s free preview` : '',
        stream.category ? ` · ${stream.category}` : ''),
      stream.tags.length ? h('p', { class: 'chips' }, stream.tags.map((t) => h('a', { class: 'chip', href: `/?tag=${encodeURIComponent(t)}` }, `#${t}`))) : null,
      stream.description ? h('p', { class: 'description' }, stream.description) : null),
    h('aside', { class: 'watch-side', 'aria-label': 'Chat and tips' },
      stream.owner ? h('sw-tip', { stream: stream.id }) : null,
      h('sw-chat', { stream: stream.id }))));
}

// ---- /studio ---------------------------------------------------------------

function signInPrompt(what) {
  return h('div', { class: 'panel center' }, h('h1', {}, what), h('p', {}, 'Sign in with a wallet to continue.'), h('sw-wallet'));
}

function streamForm(stream, onSaved) {
  const field = (label, input) => h('label', {}, label, input);
  const title = h('input', { name: 'title', required: true, maxlength: 200, value: stream?.title ?? '' });
  const description = h('textarea', { name: 'description', rows: 3, maxlength: 2000 }, stream?.description ?? '');
  const category = h('input', { name: 'category', value: stream?.category ?? '', placeholder: 'music, gaming, talk…' });
  const tags = h('input', { name: 'tags', value: (stream?.tags ?? []).join(', '), placeholder: 'comma separated' });
  const access = h('select', { name: 'access' }, h('option', { value: 'free' }, 'Free'), h('option', { value: 'per_second' }, 'Paid by the second'));
  access.value = stream?.access ?? 'per_second';
  const perMinute = h('input', { name: 'price', inputmode: 'decimal', value: stream?.price ? formatAmount(pricePerMinute(stream.price), { symbol: false }) : '0.05' });
  const preview = h('input', { name: 'preview', type: 'number', min: 0, max: 3600, value: stream?.preview_seconds ?? 0 });
  const error = h('p', { class: 'error', role: 'alert' });
  const priceFields = h('div', { class: 'row' }, field('Price per minute (USDC)', perMinute), field('Free preview (seconds)', preview));
  const sync = () => { priceFields.hidden = access.value !== 'per_second'; };
  access.addEventListener('change', sync);
  sync();
  const form = h('form', { class: 'panel form', onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    const body = {
      title: title.value, description: description.value, category: category.value.trim(),
      tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean), access: access.value,
    };
    try {
      if (access.value === 'per_second') {
        body.price = { amount: parseAmount(perMinute.value).toString(), period_seconds: 60 };
        body.preview_seconds = Number(preview.value) || 0;
      }
      if (!stream && !body.category) delete body.category;
      const saved = stream
        ? await authed(`/api/v1/streams/${stream.id}`, { method: 'PATCH', body })
        : await authed('/api/v1/streams', { method: 'POST', body });
      onSaved(saved);
    } catch (err) {
      error.textContent = errorText(err);
    }
  } },
  h('h2', {}, stream ? 'Edit stream' : 'New stream'),
  field('Title', title), field('Description', description),
  h('div', { class: 'row' }, field('Category', category), field('Tags', tags), field('Access', access)),
  priceFields, h('button', { type: 'submit' }, stream ? 'Save' : 'Create stream'), error);
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
        h('div', {}, keyPanel(selected), h('sw-chat', { stream: selected.id }))),
      streamForm(selected, () => renderStudio(currentAuth())));
  } else {
    detail.append(h('p', { class: 'muted' }, 'No streams yet: create one, then publish to it from OBS or ffmpeg.'));
  }
  setMain(h('div', { class: 'studio' },
    h('nav', { class: 'studio-side', 'aria-label': 'Your streams' }, h('h2', {}, 'Your streams'), newButton, creating, list, splitEditor(auth)),
    detail));
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
      h('div', { class: 'stats' }, money('Available', 'available', balances.available), money('In channels (escrow)', 'escrowed', balances.escrowed), money('Earned', 'earned', balances.earned)), faucet),
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
    h('section', { class: 'panel' }, h('h2', {}, 'Channels'),
      channels.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Channel', 'With', 'Deposit', 'Redeemed', 'State', ''].map((t) => h('th', {}, t)))), h('tbody', {}, channelRows)) : h('p', { class: 'muted' }, 'No channels yet: they open when you watch a paid stream.')),
    h('section', { class: 'panel' }, h('div', { class: 'row spread' }, h('h2', {}, 'History'), csv),
      transfers.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Time', 'What', 'Amount', 'Channel'].map((t) => h('th', {}, t)))), h('tbody', {}, transferRows)) : h('p', { class: 'muted' }, 'Nothing yet.')),
  );
}

const pages = { index: discovery, watch, studio, account };
window.addEventListener('popstate', () => { if (page === 'index') discovery(); });
pages[page]?.().catch((err) => setMain(h('p', { class: 'error' }, errorText(err))));
