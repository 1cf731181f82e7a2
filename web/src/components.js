// StreamWeave's web components, framework-free, in one ES module. Another
// site embeds a paid stream with two lines of HTML:
//   <script type="module" src="https://HOST/assets/streamweave.js"></script>
//   <sw-player stream="STREAM_ID" server="https://HOST"></sw-player>
// Elements: <sw-wallet>, <sw-player>, <sw-chat>, <sw-tip>, <sw-earnings>,
// <sw-leaderboard>. A ticketed event's room is <sw-player stream="ID" ticket>.
// A members stream plays through a member session (the viewer's membership
// admits them, at the tier's quality); <sw-player start="SECONDS"> starts a
// video or recording there.
import Hls from 'hls.js';
import uPlot from 'uplot';
import uPlotCss from 'uplot/dist/uPlot.min.css';
import baseCss from './base.css';
import {
  ApiError, authed, currentAuth, demoWalletAvailable, formatAmount, formatDuration, iceServersOf, onAuth, parseAmount, periodText,
  pricePerMinute, request, secondsFor, shortAddress, signIn, signOut,
} from './api.js';
import { PaymentStopped, StreamPayment } from './pay.js';

export * from './api.js';
export { StreamPayment, PaymentStopped } from './pay.js';

/** Builds an element: h('button', {class: 'x', onclick}, 'text', child). Text is always text. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class Base extends HTMLElement {
  constructor(extraCss = '') {
    super();
    this.root = this.attachShadow({ mode: 'open' });
    this.root.append(h('style', {}, baseCss + extraCss));
    this.body = h('div', { part: 'body' });
    this.root.append(this.body);
  }

  /** The server the element talks to ('' = this page's). Only same-origin pages sign in. */
  get server() {
    return (this.getAttribute('server') || '').replace(/\/$/, '');
  }

  api(path, options = {}) {
    return request(path, { ...options, base: this.server });
  }

  /** The account signed in to this element's server. */
  auth() {
    return currentAuth(this.server);
  }

  authed(path, options = {}) {
    return authed(path, { ...options, base: this.server });
  }

  watchAuth(fn) {
    return onAuth(fn, this.server);
  }
}

function wsUrl(server, path) {
  const base = server || location.origin;
  return base.replace(/^http/, 'ws') + path;
}

// ---- <sw-wallet> ---------------------------------------------------------

/** Sign-in button: a demo wallet (dev servers) or an injected wallet (SIWE). */
class SwWallet extends Base {
  connectedCallback() {
    this.stop = this.watchAuth((auth) => this.render(auth));
  }

  disconnectedCallback() {
    this.stop?.();
  }

  async render(auth) {
    this.body.replaceChildren();
    const status = h('span', { class: 'error', role: 'alert' });
    if (auth) {
      const label = auth.wallet === 'demo' ? 'Demo wallet' : 'Wallet';
      this.body.append(h('div', { class: 'row' },
        h('span', { title: auth.address, 'data-address': auth.address },
          `${label} ${shortAddress(auth.address)}`,
          auth.wallet === 'demo' ? h('small', { class: 'muted' }, ' (a key kept in this browser; for trying things out)') : null),
        h('button', { class: 'secondary', onclick: () => signOut(this.server) }, 'Sign out')));
      return;
    }
    const buttons = h('div', { class: 'row' });
    const go = (kind) => async () => {
      status.textContent = '';
      for (const b of buttons.querySelectorAll('button')) b.disabled = true;
      try { await signIn(kind, this.server); } catch (err) { status.textContent = err.message; }
      for (const b of buttons.querySelectorAll('button')) b.disabled = false;
    };
    if (await demoWalletAvailable(this.server)) {
      buttons.append(h('button', { onclick: go('demo'), 'data-action': 'demo-wallet' }, 'Use a demo wallet'));
    }
    buttons.append(h('button', { class: 'secondary', onclick: go('injected'), disabled: !window.ethereum, title: window.ethereum ? null : 'No browser wallet found' }, 'Connect wallet'));
    this.body.replaceChildren(buttons, status);
  }
}

// ---- <sw-player> ---------------------------------------------------------

const PLAYER_CSS = `
.stage { position: relative; background: #000; border-radius: 10px; overflow: hidden; }
video { display: block; width: 100%; aspect-ratio: 16 / 9; background: #000; }
.overlay { position: absolute; inset: 0; display: grid; place-items: center; text-align: center; padding: 1rem; background: rgba(5,6,10,.78); }
.overlay[hidden] { display: none; }
.overlay .box { max-width: 28rem; display: grid; gap: .6rem; }
.bar { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; margin: .5rem 0; }
.badge { font-size: .8rem; font-weight: 700; padding: .15rem .5rem; border-radius: 999px; background: #333; text-transform: uppercase; letter-spacing: .04em; }
.badge.live { background: #e5484d; color: #fff; }
.badge.ended { background: #444; }
.meter { display: grid; grid-template-columns: repeat(auto-fit, minmax(8.5rem, 1fr)); gap: .5rem; }
.meter div { background: #0f1116; border-radius: 8px; padding: .4rem .6rem; }
.meter dt { font-size: .75rem; color: var(--sw-muted); }
.meter dd { margin: 0; font-variant-numeric: tabular-nums; font-weight: 600; }
.spacer { flex: 1; }
.reactions { position: absolute; right: 1rem; bottom: 3.5rem; width: 3rem; height: 60%; pointer-events: none; }
.reaction { position: absolute; bottom: 0; font-size: 2rem; animation: rise 3s ease-out forwards; }
@keyframes rise { from { transform: translateY(0); opacity: 1; } to { transform: translateY(-12rem); opacity: 0; } }
`;

/** Plays a stream; for a paid stream opens a channel, pays by the second and shows the meter. */
class SwPlayer extends Base {
  constructor() {
    super(PLAYER_CSS);
    this.state = 'loading';
  }

  static get observedAttributes() { return ['stream']; }

  connectedCallback() {
    this.build();
    this.load();
    // Live reactions (from the stream's chat room): shown as the moment
    // they belong to plays here, this player's latency behind the live edge.
    this.onReaction = (e) => {
      if (e.detail.stream !== this.stream?.id) return;
      const delay = Math.min(10_000, Math.max(0, (this.hls?.latency ?? 0) * 1000));
      setTimeout(() => this.showReaction(e.detail.emoji), delay);
    };
    document.addEventListener('sw-reaction', this.onReaction);
    this.stopAuth = this.watchAuth(() => {
      if (!this.stream || this.hls || this.whep) return;
      if (this.isTicketed()) this.startTicket();
      else if (this.isMembers()) this.startMember();
      else if (this.isPaid() && !this.hasAttribute('preview')) this.showGate();
    });
  }

  disconnectedCallback() {
    this.teardown();
    document.removeEventListener('sw-reaction', this.onReaction);
    this.stopAuth?.();
    this.events?.close();
    clearInterval(this.poll);
    window.removeEventListener('pagehide', this.onPageHide);
  }

  attributeChangedCallback(_name, old, value) {
    if (old && old !== value && this.isConnected) { this.teardown(); this.load(); }
  }

  /** Floats a reaction up over the picture (at most 20 at once). */
  showReaction(emoji) {
    if (this.reactions.childElementCount >= 20) return;
    const shown = h('span', { class: 'reaction', 'data-reaction': emoji, style: `left: ${Math.floor(Math.random() * 60)}%` }, emoji);
    shown.addEventListener('animationend', () => shown.remove());
    this.reactions.append(shown);
    setTimeout(() => shown.remove(), 4000);
  }

  isPaid() {
    return this.stream?.access === 'per_second' && !this.isTicketed();
  }

  /** A members stream: members of its tiers (and its creator) watch through a member session. */
  isMembers() {
    return this.stream?.access === 'members' && !this.hasAttribute('ticket');
  }

  /** An event's stream: ticket holders (and its creator) watch through a ticket session, no vouchers. */
  isTicketed() {
    return this.hasAttribute('ticket') || this.stream?.access === 'ticket' || this.stream?.access === 'ticketed';
  }

  build() {
    this.video = h('video', { controls: true, playsinline: true, muted: true, 'aria-label': 'Stream player' });
    this.overlay = h('div', { class: 'overlay', part: 'overlay' });
    this.reactions = h('div', { class: 'reactions', 'aria-hidden': 'true' });
    this.badge = h('span', { class: 'badge', 'data-state': '' }, '…');
    this.viewersEl = h('span', { class: 'muted', 'data-viewers': '' });
    this.quality = h('select', { 'aria-label': 'Quality', onchange: () => { if (this.hls) this.hls.currentLevel = Number(this.quality.value); } }, h('option', { value: '-1' }, 'Auto'));
    this.qualityNote = h('small', { class: 'muted', 'data-quality-note': '', hidden: true });
    this.liveButton = h('button', { class: 'secondary', onclick: () => this.goLive(), title: 'Jump to the live edge' }, 'Live edge');
    this.topUpButton = h('button', { hidden: true, 'data-action': 'top-up', onclick: () => this.topUp() }, 'Top up 30 minutes');
    this.status = h('p', { role: 'status', class: 'muted', 'data-status': '' });
    this.meter = h('dl', { class: 'meter', hidden: true, 'aria-label': 'Payment meter' });
    this.body.append(
      h('div', { class: 'stage' }, this.video, this.reactions, this.overlay),
      h('div', { class: 'bar' }, this.badge, this.viewersEl, h('span', { class: 'spacer' }), this.topUpButton, this.qualityNote, this.quality, this.liveButton),
      this.status,
      this.meter,
    );
    this.video.addEventListener('pause', () => {
      if (this.hls && this.payment && this.state === 'playing') {
        this.hls.stopLoad();
        this.say('Paused: not paying while paused.');
      }
    });
    this.video.addEventListener('play', () => {
      if (this.hls && this.payment && this.state === 'playing') { this.hls.startLoad(); this.say('Playing.'); }
    });
    this.video.addEventListener('waiting', () => {
      if (this.state === 'cap' || this.state === 'funds') this.video.pause();
    });
    // Recordings and videos remember where they were left off.
    this.video.addEventListener('timeupdate', () => {
      if (this.memberSession && this.hls && this.video.currentTime > 0) this.memberPosition = this.video.currentTime;
      if (Date.now() - (this.savedAt ?? 0) < 2000) return;
      this.savedAt = Date.now();
      this.savePosition(this.video.currentTime);
    });
    this.video.addEventListener('pause', () => { this.savePosition(this.video.currentTime); this.sendProgress(); });
    this.video.addEventListener('ended', () => this.savePosition(0));
  }

  /** Whether the stream is on demand (an ended recording or a video): seekable, resumable. */
  isVod() {
    return this.stream?.state === 'ended';
  }

  positionKey() {
    return `streamweave.position:${this.server ? `${this.server}:` : ''}${this.stream.id}`;
  }

  /** Where to start a recording, in seconds: the `start` attribute, else where this browser left it off (0: from the start). */
  savedPosition() {
    if (!this.isVod()) return 0;
    if (this.resumeAt > 0) return this.resumeAt;
    const start = Number(this.getAttribute('start'));
    if (Number.isFinite(start) && start > 0) return start;
    try { return Math.max(0, Number(localStorage.getItem(this.positionKey())) || 0); } catch { return 0; }
  }

  savePosition(seconds) {
    if (!this.isVod() || !this.hls || this.resuming) return;
    const duration = this.video.duration;
    try {
      // Near either end there is nothing to resume.
      if (seconds < 3 || (Number.isFinite(duration) && duration - seconds < Math.min(5, duration / 20))) localStorage.removeItem(this.positionKey());
      else localStorage.setItem(this.positionKey(), String(Math.floor(seconds)));
    } catch { /* storage unavailable: start from the beginning next time */ }
  }

  say(text, kind = 'muted') {
    this.status.className = kind;
    this.status.textContent = text;
  }

  setState(state) {
    this.state = state;
    this.setAttribute('state', state);
    this.dispatchEvent(new CustomEvent('sw-state', { detail: { state }, bubbles: true, composed: true }));
  }

  showBadge(streamState) {
    const video = this.stream?.source === 'upload';
    this.badge.textContent = streamState === 'live' ? 'Live' : video ? 'Video' : streamState === 'ended' ? 'Ended' : 'Offline';
    this.liveButton.hidden = streamState === 'ended';
    this.badge.className = `badge ${streamState}`;
    this.badge.dataset.state = streamState;
  }

  async load() {
    const id = this.getAttribute('stream');
    if (!id) return;
    try {
      this.stream = await this.api(`/api/v1/streams/${encodeURIComponent(id)}`);
    } catch (err) {
      this.setState('error');
      this.say(err.status === 404 ? 'No such stream.' : `Cannot load the stream: ${err.message}`, 'error');
      return;
    }
    this.showBadge(this.stream.state);
    this.listen();
    if (!this.isPaid()) {
      // Free streams have no sessions to push a count: read it now and then.
      const show = () => { if (this.stream.state === 'live') this.viewersEl.textContent = `${this.stream.viewers} watching`; };
      show();
      clearInterval(this.poll);
      this.poll = setInterval(async () => {
        try { this.stream = { ...this.stream, ...(await this.api(`/api/v1/streams/${this.stream.id}`)) }; show(); } catch { /* next time */ }
      }, 15_000);
    }
    // `preview`: the creator watches their own paid stream without paying.
    if (this.isTicketed()) this.startTicket();
    else if (this.isMembers()) this.startMember();
    else if (this.isPaid() && !this.hasAttribute('preview')) this.showGate();
    else this.startFree();
  }

  listen() {
    this.events?.close();
    const socket = new WebSocket(wsUrl(this.server, `/api/v1/streams/${this.stream.id}/events`));
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === 'viewers' && (this.isPaid() || this.isMembers())) this.viewersEl.textContent = `${event.count} watching`;
      if (event.type === 'state') {
        const was = this.stream.state;
        this.stream.state = event.state;
        this.showBadge(event.state);
        if (was === 'idle' && event.state === 'live' && !this.hls && !this.whep) {
          if (this.isTicketed()) this.startTicket();
          else if (this.isMembers()) this.startMember();
          else if (!this.isPaid() || this.hasAttribute('preview')) this.startFree();
        }
      }
    };
    this.events = socket;
  }

  // -- free streams --
  startFree() {
    if (this.stream.state === 'idle') {
      this.setState('offline');
      this.overlayText('Offline', 'The stream has not started yet. It plays here as soon as it does.');
      return;
    }
    this.overlay.hidden = true;
    // Published over WebRTC to this server: its own frames over WHEP, the least delay (HLS if that fails).
    if (this.stream.whep_url && globalThis.RTCPeerConnection && !this.hasAttribute('hls')) {
      this.attachWhep(this.server + this.stream.whep_url).catch(() => {
        this.teardownWhep();
        this.attach(this.server + this.stream.playback_url);
      });
      return;
    }
    this.attach(this.server + this.stream.playback_url);
  }

  /**
   * Plays a WHEP endpoint: the publisher's frames forwarded as they arrive. `bearer`: a paid or member session's id; the
   * server's 402s come on the data channel and are answered like HLS's (not while paused: pausing stops payment).
   */
  async attachWhep(url, bearer = null) {
    const pc = new RTCPeerConnection({ iceServers: await iceServersOf(url) });
    this.whep = { pc, session: null };
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const notices = pc.createDataChannel('notices');
    notices.onmessage = (e) => {
      let notice;
      try { notice = JSON.parse(e.data); } catch { return; }
      if (notice.notice === 'payment-required' && this.payment) {
        this.whepDue = notice.problem;
        if (!this.video.paused) this.payWhepDue();
      }
      if (notice.notice === 'ended') this.say(notice.detail ?? 'The session ended.', 'error');
    };
    const media = new MediaStream();
    pc.ontrack = (e) => {
      media.addTrack(e.track);
      this.video.srcObject = media;
      this.video.play().catch(() => {});
    };
    // The offer goes at once, before gathering: the server is ICE-lite and learns this side's addresses from its
    // connectivity checks (over a TURN relay too), so waiting for candidates would only delay the first frame.
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) }, body: pc.localDescription.sdp });
    if (res.status !== 201) throw new Error(`WHEP: ${res.status}`);
    this.whep.session = new URL(res.headers.get('location'), new URL(url, location.href)).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    this.quality.replaceChildren(h('option', { value: '-1' }, 'Source (WebRTC)'));
    this.video.addEventListener('playing', () => {
      this.setState('playing');
      this.say('Playing over WebRTC: the least delay.');
    }, { once: true });
    pc.addEventListener('connectionstatechange', () => {
      if (this.whep?.pc !== pc || !['failed', 'closed'].includes(pc.connectionState)) return;
      // The publisher left or the network failed: HLS has the stream (or its end).
      this.teardownWhep();
      const fallback = this.payment?.session.playback_url ?? this.memberSession?.playback_url ?? this.stream.playback_url;
      this.retry = setTimeout(() => this.attach(this.server + fallback), 1000);
    });
  }

  /** Answers the 402 the WHEP session is paused on. */
  payWhepDue() {
    const problem = this.whepDue;
    this.whepDue = null;
    if (!problem) return;
    this.payment.answer(problem).catch((err) => {
      if (err instanceof PaymentStopped) this.stopped(err);
      else this.whepDue = problem;
    });
  }

  /** A paid WHEP session: a second ahead each second while playing, so forwarding never waits for a voucher. */
  payWhepAhead() {
    let position = 0;
    const onPlay = () => this.payWhepDue();
    this.video.addEventListener('play', onPlay);
    const timer = setInterval(() => {
      if (this.video.paused || !this.payment) return;
      position += 1;
      this.payment.payAhead(2000, position).catch((err) => { if (err instanceof PaymentStopped) this.stopped(err); });
    }, 1000);
    this.whepPaying = () => { clearInterval(timer); this.video.removeEventListener('play', onPlay); };
  }

  teardownWhep() {
    this.whepPaying?.();
    this.whepPaying = null;
    this.whepDue = null;
    if (!this.whep) return;
    const { pc, session } = this.whep;
    this.whep = null;
    pc.close();
    if (session) fetch(session, { method: 'DELETE' }).catch(() => {});
    this.video.srcObject = null;
  }

  // -- ticketed events --
  /** Starts a ticket session (a ticket holder or the event's creator) and plays it. */
  async startTicket() {
    clearTimeout(this.retry);
    if (this.hls || this.startingTicket) return;
    const auth = this.auth();
    if (!auth) {
      this.setState('signed-out');
      this.overlayText('Ticket holders only', 'Sign in with the wallet that holds your ticket to watch.', h('sw-wallet', { server: this.server || null }));
      return;
    }
    if (this.stream.state === 'idle') {
      this.setState('offline');
      this.overlayText('Not started yet', 'The show has not started. It plays here as soon as it does.');
      return;
    }
    this.startingTicket = true;
    let session;
    try {
      await this.endTicketSession();
      session = await this.authed(`/api/v1/streams/${encodeURIComponent(this.stream.id)}/sessions`, { method: 'POST', body: {} });
    } catch (err) {
      this.startingTicket = false;
      if (this.stream.state === 'ended' && err.type !== 'ticket-required') {
        this.setState('ended');
        this.overlayText('The show has ended', err.message);
        return;
      }
      if (err.type === 'ticket-required' || err.status === 403) {
        this.setState('ticket-required');
        this.overlayText('You need a ticket', err.message && err.type !== 'ticket-required' ? err.message : 'This show is for ticket holders: buy a ticket to watch.');
        this.dispatchEvent(new CustomEvent('sw-ticket-required', { detail: { problem: err.problem }, bubbles: true, composed: true }));
        return;
      }
      this.setState('error');
      this.say(`Cannot start watching: ${err.message} (trying again)`, 'error');
      this.retry = setTimeout(() => this.startTicket(), 5000);
      return;
    }
    this.startingTicket = false;
    if (!this.isConnected) return;
    this.ticketSession = session;
    this.overlay.hidden = true;
    this.say('Starting…');
    this.attach(this.server + session.playback_url);
  }

  async endTicketSession() {
    const session = this.ticketSession;
    this.ticketSession = null;
    if (!session) return;
    try { await this.authed(`/api/v1/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' }); } catch { /* gone already */ }
  }

  // -- members streams --
  /** Where memberships are bought (on this element's server). */
  membershipUrl() {
    const owner = this.stream?.owner;
    return `${this.server}/membership${owner ? `?creator=${encodeURIComponent(owner)}` : ''}`;
  }

  /** "Members only": who may watch (the stream's tiers, by name) and where to join. */
  membersOnly(signedIn, tiers = this.stream.tiers ?? []) {
    const who = h('span', { 'data-member-tiers': '' }, 'This stream is for members.');
    this.overlayText('Members only', signedIn ? 'Your account has no membership that admits you to this stream.' : 'Sign in with a member\'s wallet to watch.',
      who,
      h('a', { href: this.membershipUrl(), 'data-action': 'memberships', style: 'color:var(--sw-accent)' }, 'See memberships'),
      signedIn ? null : h('sw-wallet', { server: this.server || null }));
    Promise.all(tiers.map((id) => (id === 'platform'
      ? Promise.resolve('any StreamWeave membership')
      : this.api(`/api/v1/tiers/${encodeURIComponent(id)}`).then((t) => `${t.name} (${formatAmount(t.price)} per ${periodText(t.period_seconds)})`, () => null))))
      .then((names) => {
        const known = names.filter(Boolean);
        if (known.length) who.textContent = `Members of ${known.join(', ')} watch.`;
      });
  }

  /** Starts a member session (a member of one of the stream's tiers, or its creator) and plays it. */
  async startMember() {
    clearTimeout(this.retry);
    if (this.hls || this.whep || this.startingMember) return;
    const auth = this.auth();
    if (!auth) {
      this.setState('signed-out');
      this.membersOnly(false);
      return;
    }
    if (this.stream.state === 'idle') {
      this.setState('offline');
      this.overlayText('Offline', 'The stream has not started yet. Members watch it here as soon as it does.');
      return;
    }
    this.startingMember = true;
    let session;
    try {
      await this.endMemberSession();
      session = await this.authed(`/api/v1/streams/${encodeURIComponent(this.stream.id)}/sessions`, { method: 'POST', body: {} });
    } catch (err) {
      this.startingMember = false;
      if (err.type === 'membership-required') {
        this.setState('membership-required');
        this.membersOnly(true, err.problem.tiers ?? this.stream.tiers);
        this.dispatchEvent(new CustomEvent('sw-membership-required', { detail: { problem: err.problem }, bubbles: true, composed: true }));
        return;
      }
      if (err.type === 'too-many-streams') {
        this.setState('too-many-streams');
        this.tooMany(err.problem);
        return;
      }
      if (err.status === 401) {
        this.setState('signed-out');
        this.membersOnly(false);
        return;
      }
      this.setState('error');
      this.say(`Cannot start watching: ${err.message} (trying again)`, 'error');
      this.retry = setTimeout(() => this.startMember(), 5000);
      return;
    }
    this.startingMember = false;
    if (!this.isConnected) { this.memberSession = session; this.endMemberSession(); return; }
    this.memberSession = session;
    this.memberPosition = 0;
    this.overlay.hidden = true;
    this.say('Starting…');
    clearInterval(this.progressTimer);
    this.progressTimer = setInterval(() => this.sendProgress(), 30_000);
    if (!this.onPageHide) {
      // Leaving the page frees the tier's stream at once (else it idles out in a minute).
      this.onPageHide = () => {
        const s = this.memberSession;
        const auth = this.auth();
        if (!s || !auth) return;
        fetch(`${this.server}/api/v1/sessions/${encodeURIComponent(s.id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${auth.token}` }, keepalive: true }).catch(() => {});
      };
      window.addEventListener('pagehide', this.onPageHide);
    }
    // Published over WebRTC here: the source's frames over WHEP when the tier allows its picture (else 403: HLS, at the tier's rungs).
    if (this.stream.whep_url && globalThis.RTCPeerConnection && !this.hasAttribute('hls')) {
      try {
        await this.attachWhep(this.server + this.stream.whep_url, session.id);
        return;
      } catch {
        this.teardownWhep();
      }
    }
    this.attach(this.server + session.playback_url);
  }

  /** The tier's limit of streams at once is reached: the member's sessions, each with a button to end it. */
  tooMany(problem) {
    const active = problem.active_sessions ?? [];
    const list = h('ul', { style: 'list-style:none;padding:0;margin:0;display:grid;gap:.4rem;text-align:left', 'data-active-sessions': '' });
    const error = h('span', { class: 'error', role: 'alert' });
    const retry = h('button', { class: 'secondary', 'data-action': 'retry-member', onclick: () => this.startMember() }, 'Try again');
    this.overlayText('Too many streams at once',
      `Your membership allows ${problem.max_streams ?? 1} stream${problem.max_streams === 1 ? '' : 's'} at once. End one to watch here.`,
      list, retry, error);
    for (const s of active) {
      const title = h('span', {}, s.stream_id === this.stream.id ? 'This stream (another tab or device)' : 'Another stream');
      const end = h('button', {
        'data-action': 'end-session', 'data-session': s.id,
        onclick: async () => {
          end.disabled = true;
          error.textContent = '';
          try {
            await this.authed(`/api/v1/sessions/${encodeURIComponent(s.id)}`, { method: 'DELETE' });
          } catch (err) {
            // Already ended is what was wanted.
            if (err.status !== 404) { error.textContent = err.message; end.disabled = false; return; }
          }
          this.startMember();
        },
      }, 'End it and watch here');
      list.append(h('li', { class: 'row', style: 'justify-content:space-between;align-items:center', dataset: { session: s.id, stream: s.stream_id } }, title, end));
      this.api(`/api/v1/streams/${encodeURIComponent(s.stream_id)}`).then((stream) => {
        title.replaceChildren(h('a', { href: `${this.server}/watch/${encodeURIComponent(stream.id)}`, style: 'color:var(--sw-accent)' }, stream.title),
          stream.id === this.stream.id ? ' (this stream, elsewhere)' : '');
      }, () => {});
    }
  }

  /** Tells the server where the member is (every 30 s, on pause and at the end): the watch history's resume point. */
  sendProgress() {
    const session = this.memberSession;
    if (!session?.membership_id || !(this.memberPosition > 0)) return Promise.resolve();
    const position = Math.floor(this.memberPosition * 1000);
    return this.authed(`/api/v1/sessions/${encodeURIComponent(session.id)}/progress`, { method: 'POST', body: { position_ms: position } })
      .catch(() => { /* the next one, or the session's restart, catches up */ });
  }

  async endMemberSession() {
    clearInterval(this.progressTimer);
    clearTimeout(this.firstProgress);
    const session = this.memberSession;
    if (!session) return;
    await this.sendProgress();
    this.memberSession = null;
    try { await this.authed(`/api/v1/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' }); } catch { /* gone already */ }
  }

  /** A new member session where this one stopped (it expired after 4 hours, or ended). */
  restartMember(why) {
    if (this.isVod() && this.video.currentTime > 0) this.resumeAt = Math.floor(this.video.currentTime);
    this.say(why);
    this.teardown(false);
    this.startMember();
  }

  overlayText(title, text, ...actions) {
    this.overlay.hidden = false;
    this.overlay.replaceChildren(h('div', { class: 'box' }, h('strong', {}, title), h('span', {}, text), ...actions));
  }

  // -- paid streams --
  showGate() {
    if (this.hls) return;
    const price = this.stream.price;
    const perMinute = formatAmount(pricePerMinute(price));
    const preview = this.stream.preview_seconds ? ` The first ${this.stream.preview_seconds} s are free.` : '';
    const auth = this.auth();
    if (!auth) {
      this.setState('signed-out');
      this.overlayText('Paid stream', `${perMinute} a minute, paid by the second.${preview} Sign in to watch.`, h('sw-wallet', { server: this.server || null }));
      return;
    }
    if (this.stream.state === 'idle') {
      this.setState('offline');
      this.overlayText('Offline', `The stream has not started yet (${perMinute} a minute once it does).`);
      this.retry = setTimeout(() => this.refreshAndGate(), 3000);
      return;
    }
    const defaultDeposit = pricePerMinute(price) * 30n;
    const deposit = h('input', { name: 'deposit', inputmode: 'decimal', value: formatAmount(defaultDeposit, { symbol: false }), 'aria-describedby': 'deposit-help', size: 8 });
    const cap = h('input', { name: 'cap', inputmode: 'decimal', placeholder: 'no cap', value: this.getAttribute('cap') ?? '', size: 8 });
    const error = h('span', { class: 'error', role: 'alert' });
    const start = h('button', {
      'data-action': 'start',
      onclick: async () => {
        error.textContent = '';
        let depositUnits;
        let capUnits = null;
        try {
          depositUnits = parseAmount(deposit.value);
          if (cap.value.trim()) capUnits = parseAmount(cap.value);
        } catch (err) {
          error.textContent = err.message;
          return;
        }
        start.disabled = true;
        try { await this.startPaid(depositUnits, capUnits); } catch (err) { error.textContent = err.message; start.disabled = false; }
      },
    }, 'Start watching');
    this.setState('ready');
    this.overlayText('Paid stream', `${perMinute} a minute, paid by the second from a channel you fund.${preview} Pausing stops payment.`,
      h('div', { class: 'row', style: 'justify-content:center' },
        h('label', {}, 'Deposit (USDC)', deposit),
        h('label', {}, 'Spending cap (USDC)', cap)),
      h('small', { id: 'deposit-help', class: 'muted' }, 'The deposit is held in escrow for this creator; what you do not spend comes back when the channel closes.'),
      start, error);
  }

  async refreshAndGate() {
    try { this.stream = await this.api(`/api/v1/streams/${this.stream.id}`); } catch { /* keep the last view */ }
    this.showBadge(this.stream.state);
    this.showGate();
  }

  async startPaid(deposit, cap) {
    const auth = this.auth();
    this.payment = new StreamPayment({ stream: this.stream, auth, deposit, cap, base: this.server, onChange: (m) => this.renderMeter(m) });
    try {
      await this.payment.start();
    } catch (err) {
      if (err instanceof ApiError && /insufficient|balance/i.test(err.message)) {
        throw new Error(`Not enough balance for that deposit: ${err.message}`);
      }
      throw err;
    }
    this.overlay.hidden = true;
    this.setState('playing');
    this.say('Playing. Paying one segment ahead.');
    if (this.stream.whep_url && globalThis.RTCPeerConnection && !this.hasAttribute('hls')) {
      try {
        await this.attachWhep(this.server + this.stream.whep_url, this.payment.session.id);
        this.payWhepAhead();
        return;
      } catch {
        this.teardownWhep();
      }
    }
    this.attach(this.server + this.payment.session.playback_url);
  }

  renderMeter(m) {
    const row = (label, key, value, units) => h('div', {}, h('dt', {}, label), h('dd', { 'data-meter': key, 'data-base-units': units ?? null }, value));
    this.meter.hidden = false;
    this.meter.replaceChildren(
      row('Seconds paid', 'seconds', String(secondsFor(m.price, m.spent) + BigInt(this.stream.preview_seconds || 0))),
      row('Spent (this session)', 'session-spent', formatAmount(m.spent), m.spent.toString()),
      row('Spent on channel', 'spent', formatAmount(m.redeemed), m.redeemed.toString()),
      row('Balance left', 'left', formatAmount(m.deposit - m.redeemed), (m.deposit - m.redeemed).toString()),
      row('Channel deposit', 'deposit', formatAmount(m.deposit), m.deposit.toString()),
      row('Cap', 'cap', m.cap == null ? 'none' : formatAmount(m.cap), m.cap?.toString()),
    );
    // Two minutes from the end of the deposit: offer a top-up before playback stops.
    const low = m.deposit - m.redeemed < pricePerMinute(this.stream.price) * 2n;
    this.topUpButton.hidden = !low;
    if (low && this.state === 'playing') this.say('The channel\'s deposit is running low: top it up to keep watching.');
    this.dispatchEvent(new CustomEvent('sw-meter', { detail: m, bubbles: true, composed: true }));
  }

  async topUp() {
    this.topUpButton.disabled = true;
    try {
      await this.payment.topUp(pricePerMinute(this.stream.price) * 30n);
      if (this.state === 'funds') {
        this.overlay.hidden = true;
        this.setState('playing');
        this.hls?.startLoad();
        this.video.play().catch(() => {});
      }
      this.say('Topped up.', 'ok');
    } catch (err) {
      this.say(`Top-up failed: ${err.message}`, 'error');
    }
    this.topUpButton.disabled = false;
  }

  stopped(err) {
    const reason = err.reason;
    this.setState(reason);
    if (reason === 'funds') {
      const topUp = h('button', { onclick: () => this.topUp() }, 'Top up 30 minutes');
      this.overlayText('Out of funds', err.message, topUp);
    } else if (reason === 'cap') {
      this.overlayText('Spending cap reached', 'Playback stopped: this session spent the cap you set. Start again with a higher cap to keep watching.');
    } else {
      this.overlayText('Payment stopped', err.message);
    }
    this.say(err.message, 'error');
    this.hls?.stopLoad();
  }

  payingLoader() {
    const player = this;
    const Inner = Hls.DefaultConfig.loader;
    return class PayingLoader {
      constructor(config) {
        this.config = config;
        this.inner = new Inner(config);
      }

      get stats() { return this.inner.stats; }

      get context() { return this.inner.context; }

      destroy() { this.inner.destroy(); }

      abort() { this.aborted = true; this.inner.abort(); }

      load(context, config, callbacks) {
        const onError = async (error, ctx, details, stats) => {
          if (error.code !== 402 || this.aborted || !player.payment) {
            callbacks.onError(error, ctx, details, stats);
            return;
          }
          let problem = {};
          try { problem = JSON.parse(new TextDecoder().decode(details?.response ?? details?.responseText ?? '')); } catch { /* not JSON */ }
          try {
            await player.payment.answer(problem);
          } catch (err) {
            if (err instanceof PaymentStopped) player.stopped(err);
            else player.say(`Payment failed: ${err.message}`, 'error');
            callbacks.onError(error, ctx, details, stats);
            return;
          }
          if (this.aborted) return;
          this.inner.destroy();
          this.inner = new Inner(this.config);
          this.inner.load(context, config, { ...callbacks, onError: (e, c, d, s) => (e.code === 402 ? onError(e, c, d, s) : callbacks.onError(e, c, d, s)) });
        };
        const onSuccess = (response, stats, ctx, details) => {
          callbacks.onSuccess(response, stats, ctx, details);
          const frag = ctx.frag;
          if (player.payment && frag && frag.sn !== 'initSegment' && player.state === 'playing') {
            player.payment.payAhead(Math.round((frag.duration || 2) * 1000), frag.sn).catch((err) => {
              if (err instanceof PaymentStopped) player.stopped(err);
            });
          }
        };
        this.inner.load(context, config, { ...callbacks, onError, onSuccess });
      }
    };
  }

  attach(url) {
    if (!Hls.isSupported()) {
      if (this.video.canPlayType('application/vnd.apple.mpegurl') && !this.payment) {
        this.video.src = url;
        this.video.play().catch(() => {});
        return;
      }
      this.say('This browser cannot play HLS.', 'error');
      return;
    }
    const config = { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, fragLoadPolicy: { default: { maxTimeToFirstByteMs: 8000, maxLoadTimeMs: 20000, timeoutRetry: { maxNumRetry: 4, retryDelayMs: 0, maxRetryDelayMs: 0 }, errorRetry: { maxNumRetry: 6, retryDelayMs: 1000, maxRetryDelayMs: 4000 } } } };
    if (this.payment) config.fLoader = this.payingLoader();
    const resumeAt = this.savedPosition();
    this.resumeAt = 0;
    if (resumeAt > 0) {
      config.startPosition = resumeAt;
      // Until playback reaches it (or the viewer seeks), the position stays the one to resume at.
      this.resuming = true;
      const reached = (event) => {
        if (event.type === 'timeupdate' && this.video.currentTime < resumeAt - 1) return;
        this.resuming = false;
        this.video.removeEventListener('timeupdate', reached);
        this.video.removeEventListener('seeked', reached);
      };
      this.video.addEventListener('timeupdate', reached);
      this.video.addEventListener('seeked', reached);
    }
    const auth = this.auth();
    if (!this.payment && auth && this.stream.owner === auth.address) {
      // The creator previews their own paid stream without paying.
      config.xhrSetup = (xhr) => xhr.setRequestHeader('Authorization', `Bearer ${auth.token}`);
    }
    const hls = new Hls(config);
    this.hls = hls;
    hls.loadSource(url);
    hls.attachMedia(this.video);
    hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
      this.quality.replaceChildren(h('option', { value: '-1' }, 'Auto'),
        ...data.levels.map((level, i) => h('option', { value: String(i) }, level.height ? `${level.height}p` : `${Math.round(level.bitrate / 1000)} kb/s`)));
      this.showTierLimit(data.levels);
      this.video.play().catch(() => {});
    });
    hls.on(Hls.Events.FRAG_BUFFERED, () => {
      if (!this.payment && this.state !== 'playing') {
        this.setState('playing');
        // The first position soon, so the watch history has it; then every 30 s.
        if (this.memberSession) this.firstProgress = setTimeout(() => this.sendProgress(), 3000);
        const what = this.stream.source === 'upload' ? 'the video' : 'the recording';
        this.say(this.stream.state !== 'ended' ? 'Playing.' : resumeAt > 0 ? `Playing ${what} from where you left off (${formatDuration(resumeAt)}).` : `Playing ${what}.`);
      }
    });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (this.memberSession && data.response?.code === 401) {
        // Member sessions last 4 hours (`session-expired`): on with a new one.
        this.restartMember('The session expired: starting a new one…');
        return;
      }
      if (!data.fatal) return;
      if (['cap', 'funds', 'price', 'closed'].includes(this.state)) return;
      if (this.memberSession) {
        // The session ended elsewhere, idled out or the stream is not ready yet: a new one shortly.
        this.say('Waiting for the stream…');
        this.teardown(false);
        this.retry = setTimeout(() => this.startMember(), 2000);
        return;
      }
      if (data.details === 'levelEmptyError' || data.type === Hls.ErrorTypes.NETWORK_ERROR) {
        this.say('Waiting for the stream…');
        this.teardown(false);
        this.retry = setTimeout(() => (this.payment ? this.restartPaid() : this.isTicketed() ? this.startTicket() : this.startFree()), 2000);
        return;
      }
      this.say(`Playback error: ${data.details}`, 'error');
    });
  }

  async restartPaid() {
    try {
      await this.payment.start();
      this.attach(this.server + this.payment.session.playback_url);
    } catch (err) {
      this.say(`Cannot resume: ${err.message}`, 'error');
    }
  }

  /** A member session's quality menu lists what the tier allows; say so, and what is above it. */
  showTierLimit(levels) {
    const max = this.memberSession?.max_height;
    this.qualityNote.hidden = !max;
    if (!max) { this.qualityNote.textContent = ''; delete this.qualityNote.dataset.maxHeight; return; }
    const listed = new Set(levels.map((l) => l.height).filter(Boolean));
    const above = (this.stream.renditions ?? []).map((r) => r.height).filter((height) => height && height > max && !listed.has(height));
    this.qualityNote.dataset.maxHeight = String(max);
    this.qualityNote.textContent = `Your tier allows up to ${max}p`;
    this.qualityNote.title = above.length ? `This stream also has ${[...new Set(above)].sort((a, b) => a - b).map((x) => `${x}p`).join(', ')}, for higher tiers.` : '';
  }

  goLive() {
    if (this.hls?.liveSyncPosition != null) this.video.currentTime = this.hls.liveSyncPosition;
  }

  teardown(endSession = true) {
    clearTimeout(this.retry);
    this.teardownWhep();
    this.hls?.destroy();
    this.hls = null;
    if (endSession) {
      this.payment?.end();
      this.endTicketSession();
      this.endMemberSession();
    }
  }
}

// ---- <sw-chat> -----------------------------------------------------------

/** The reactions a viewer can send (the server's fixed set). */
const REACTIONS = ['👏', '❤️', '🔥', '😂', '😮', '🎉'];

const CHAT_CSS = `
.reacts { display: flex; gap: .25rem; margin-top: .4rem; flex-wrap: wrap; }
.reacts button { padding: .1rem .45rem; font-size: 1.1rem; }
.reacts[hidden] { display: none; }
ol { list-style: none; margin: 0; padding: 0; overflow-y: auto; height: var(--sw-chat-height, 22rem); display: flex; flex-direction: column; gap: .3rem; }
li { padding: .3rem .45rem; border-radius: 6px; overflow-wrap: anywhere; }
li.tip { background: #2a2340; border: 1px solid #5b4b9a; }
.who { font-weight: 600; color: var(--sw-accent); margin-right: .35rem; }
.mod { float: right; display: none; gap: .25rem; }
li:hover .mod, li:focus-within .mod { display: inline-flex; }
.mod button { padding: .05rem .4rem; font-size: .75rem; }
form { display: flex; gap: .4rem; margin-top: .5rem; }
form input { flex: 1; min-width: 0; }
`;

/** A stream's chat room: anyone reads; signed-in accounts post; the creator moderates. */
class SwChat extends Base {
  constructor() {
    super(CHAT_CSS);
  }

  connectedCallback() {
    this.list = h('ol', { 'aria-label': 'Chat messages', 'aria-live': 'polite' });
    this.input = h('input', { name: 'message', maxlength: 500, placeholder: 'Say something', 'aria-label': 'Chat message' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.form = h('form', { onsubmit: (e) => { e.preventDefault(); this.send(); } }, this.input, h('button', { type: 'submit' }, 'Send'));
    this.reactionBar = h('div', { class: 'reacts', role: 'group', 'aria-label': 'Reactions' },
      REACTIONS.map((emoji) => h('button', { type: 'button', class: 'secondary', 'data-react': emoji, title: `React ${emoji}`, onclick: () => this.react(emoji) }, emoji)));
    this.signInNote = h('p', { class: 'muted' }, 'Sign in to chat.');
    this.body.append(h('div', { class: 'panel' }, h('strong', {}, 'Chat'), this.list, this.form, this.reactionBar, this.signInNote, this.error));
    this.stopAuth = this.watchAuth((auth) => this.authChanged(auth));
    this.connect();
  }

  disconnectedCallback() {
    this.closed = true;
    this.socket?.close();
    this.stopAuth?.();
  }

  async connect() {
    const id = this.getAttribute('stream');
    try { this.stream = await this.api(`/api/v1/streams/${encodeURIComponent(id)}`); } catch { return; }
    const socket = new WebSocket(wsUrl(this.server, `/api/v1/streams/${encodeURIComponent(id)}/chat`));
    this.socket = socket;
    socket.onopen = () => this.authChanged(this.auth());
    socket.onmessage = (m) => this.receive(JSON.parse(m.data));
    socket.onclose = () => { if (!this.closed) setTimeout(() => this.connect(), 2000); };
  }

  authChanged(auth) {
    this.form.hidden = !auth;
    this.reactionBar.hidden = !auth;
    this.signInNote.hidden = Boolean(auth);
    this.moderator = Boolean(auth && this.stream && auth.address === this.stream.owner);
    if (auth && this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: 'auth', token: auth.token }));
    }
  }

  receive(event) {
    if (event.type === 'history') { this.list.replaceChildren(); event.messages.forEach((m) => this.add(m)); }
    if (event.type === 'message') this.add(event.message);
    if (event.type === 'deleted') this.list.querySelector(`[data-id="${CSS.escape(event.id)}"]`)?.remove();
    if (event.type === 'muted') for (const li of this.list.querySelectorAll(`[data-author="${CSS.escape(event.address)}"]`)) li.remove();
    if (event.type === 'error') this.error.textContent = event.detail;
    if (event.type === 'reaction') {
      document.dispatchEvent(new CustomEvent('sw-reaction', { detail: { ...event, stream: this.stream?.id } }));
    }
  }

  /** Sends a live reaction; it comes back through the room like everyone's. */
  async react(emoji) {
    this.error.textContent = '';
    try {
      await this.authed(`/api/v1/streams/${encodeURIComponent(this.stream.id)}/reactions`, { method: 'POST', body: { emoji } });
    } catch (err) {
      this.error.textContent = err.message;
    }
  }

  add(m) {
    const mod = this.moderator && m.author !== this.stream.owner ? h('span', { class: 'mod' },
      h('button', { class: 'secondary', onclick: () => this.authed(`/api/v1/streams/${this.stream.id}/chat/messages/${m.id}`, { method: 'DELETE' }).catch((e) => { this.error.textContent = e.message; }) }, 'Delete'),
      h('button', { class: 'secondary', onclick: () => this.authed(`/api/v1/streams/${this.stream.id}/chat/mutes/${m.author}`, { method: 'PUT' }).catch((e) => { this.error.textContent = e.message; }) }, 'Mute')) : null;
    const li = h('li', { class: m.tip ? 'tip' : null, dataset: { id: m.id, author: m.author } },
      mod, h('span', { class: 'who', title: m.author }, shortAddress(m.author)),
      m.tip ? h('strong', { 'data-tip': m.tip }, `tipped ${formatAmount(m.tip)} `) : null,
      h('span', { class: 'text' }, m.text));
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(li);
    while (this.list.children.length > 200) this.list.firstElementChild.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  send() {
    const text = this.input.value.trim();
    if (!text) return;
    this.error.textContent = '';
    if (this.socket?.readyState !== WebSocket.OPEN) { this.error.textContent = 'Not connected; trying again…'; return; }
    this.socket.send(JSON.stringify({ type: 'post', text }));
    this.input.value = '';
  }
}

// ---- <sw-tip> ------------------------------------------------------------

/** Tip the stream's creator from your available balance; shows in the chat. */
class SwTip extends Base {
  connectedCallback() {
    this.amount = h('select', { name: 'amount', 'aria-label': 'Tip amount' },
      ...['0.10', '0.50', '1.00', '5.00'].map((v) => h('option', { value: v }, `${v} USDC`)));
    this.message = h('input', { name: 'tip-message', maxlength: 500, placeholder: 'Message (optional)', 'aria-label': 'Tip message' });
    this.status = h('p', { role: 'status' });
    const button = h('button', { type: 'submit' }, 'Tip');
    this.form = h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); this.send(button); } }, this.amount, this.message, button);
    this.body.append(h('div', { class: 'panel' }, h('strong', {}, 'Tip the creator'), this.form, this.status));
    this.stopAuth = this.watchAuth((auth) => {
      this.form.hidden = !auth;
      this.status.className = 'muted';
      this.status.textContent = auth ? '' : 'Sign in to tip.';
    });
  }

  disconnectedCallback() { this.stopAuth?.(); }

  async send(button) {
    button.disabled = true;
    this.status.className = 'muted';
    this.status.textContent = 'Sending…';
    try {
      const amount = parseAmount(this.amount.value);
      const body = { amount: amount.toString(), id: crypto.randomUUID() };
      if (this.message.value.trim()) body.message = this.message.value.trim();
      await this.authed(`/api/v1/streams/${encodeURIComponent(this.getAttribute('stream'))}/tips`, { method: 'POST', body });
      this.dispatchEvent(new CustomEvent('sw-tipped', { detail: { stream: this.getAttribute('stream'), amount: body.amount }, bubbles: true, composed: true }));
      this.status.className = 'ok';
      this.status.textContent = `Sent ${formatAmount(amount)}. Thank you!`;
      this.message.value = '';
    } catch (err) {
      this.status.className = 'error';
      this.status.textContent = err.message;
    }
    button.disabled = false;
  }
}

// ---- <sw-earnings> -------------------------------------------------------

const EARNINGS_CSS = `${uPlotCss}
.totals { display: grid; grid-template-columns: repeat(auto-fit, minmax(8rem, 1fr)); gap: .5rem; margin: .5rem 0; }
.totals div { background: #0f1116; border-radius: 8px; padding: .4rem .6rem; }
.totals dt { font-size: .75rem; color: var(--sw-muted); }
.totals dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
.chart { min-height: 180px; }
.u-legend { color: var(--sw-muted); }
`;

/** The creator's earnings of one stream, live: totals and a chart (uPlot). */
class SwEarnings extends Base {
  constructor() {
    super(EARNINGS_CSS);
    this.points = [[], []];
  }

  connectedCallback() {
    this.totals = h('dl', { class: 'totals' });
    this.chartEl = h('div', { class: 'chart', 'aria-label': 'Earnings over time', role: 'img' });
    this.note = h('p', { class: 'muted', role: 'status' });
    this.body.append(h('div', { class: 'panel' }, h('strong', {}, 'Earnings'), this.totals, this.chartEl, this.note));
    this.stopAuth = this.watchAuth(() => this.start());
  }

  disconnectedCallback() {
    this.stopAuth?.();
    this.socket?.close();
    clearInterval(this.timer);
    clearTimeout(this.soon);
    this.chart?.destroy();
  }

  async start() {
    this.socket?.close();
    clearInterval(this.timer);
    const auth = this.auth();
    if (!auth) { this.note.textContent = 'Sign in as the creator to see earnings.'; return; }
    try {
      // The chart starts where the stream did, at zero.
      const stream = await this.api(`/api/v1/streams/${encodeURIComponent(this.getAttribute('stream'))}`);
      if (stream.started_at && !this.points[0].length) {
        this.points[0].push(Date.parse(stream.started_at) / 1000);
        this.points[1].push(0);
      }
    } catch { /* the totals below say what is wrong */ }
    await this.refresh();
    const id = encodeURIComponent(this.getAttribute('stream'));
    this.socket = new WebSocket(wsUrl(this.server, `/api/v1/streams/${id}/events?token=${encodeURIComponent(auth.token)}`));
    this.socket.onmessage = (m) => {
      const event = JSON.parse(m.data);
      if (event.type === 'earnings' || event.type === 'tip') this.refreshSoon();
      if (event.type === 'viewers') { this.viewers = event.count; this.renderTotals(); }
    };
    // Statistics are also read on a timer, so the view converges even without events.
    this.timer = setInterval(() => this.refresh(), 5000);
  }

  /**
   * Refreshes the totals after an event: at most once a second however
   * many arrive (a busy stream accepts thousands of vouchers a second),
   * and always once after the last one.
   */
  refreshSoon() {
    if (this.soon) return;
    const waitMs = Math.max(0, (this.refreshedAt ?? 0) + 1000 - Date.now());
    this.soon = setTimeout(() => { this.soon = null; this.refresh(); }, waitMs);
  }

  async refresh() {
    // One read at a time; what arrives meanwhile is read after it.
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    this.refreshedAt = Date.now();
    try {
      const auth = this.auth();
      const id = encodeURIComponent(this.getAttribute('stream'));
      const [stats, balances] = await Promise.all([
        this.authed(`/api/v1/streams/${id}/stats`),
        this.authed(`/api/v1/accounts/${auth.address}/balances`),
      ]);
      this.stats = stats;
      this.balances = balances;
      this.note.textContent = '';
      this.renderTotals();
      this.plot(BigInt(stats.net) + BigInt(stats.tips_net ?? 0));
    } catch (err) {
      this.note.textContent = err.status === 403 || err.status === 404 ? 'Only the stream\'s creator sees its earnings.' : err.message;
    } finally {
      this.busy = false;
      if (this.again) { this.again = false; this.refreshSoon(); }
    }
  }

  renderTotals() {
    const s = this.stats;
    if (!s) return;
    const row = (label, key, units, text) => h('div', {}, h('dt', {}, label), h('dd', { 'data-earnings': key, 'data-base-units': units ?? null }, text ?? formatAmount(units)));
    this.totals.replaceChildren(
      row('Gross (viewers paid)', 'gross', s.gross),
      row('Your share', 'net', s.net),
      row('Platform fee', 'fee', s.platform_fee),
      row('Tips', 'tips', s.tips_gross),
      row('Your share of tips', 'tips-net', s.tips_net),
      row('Paid seconds', 'seconds', null, String(s.paid_viewer_seconds ?? 0)),
      row('Viewers now', 'viewers', null, String(this.viewers ?? s.viewers_now ?? 0)),
      row('Earned balance (all streams)', 'earned', this.balances.earned),
    );
  }

  plot(net) {
    const now = Date.now() / 1000;
    const value = Number(net) / 10 ** 6; // display only: the chart's axis, never money arithmetic
    this.points[0].push(now);
    this.points[1].push(value);
    if (this.points[0].length > 720) { this.points[0].shift(); this.points[1].shift(); }
    const width = Math.max(260, this.chartEl.clientWidth || 480);
    if (!this.chart) {
      this.chart = new uPlot({
        width, height: 180,
        // At least the last five minutes on the time axis.
        scales: { x: { time: true, range: (_u, min, max) => [Math.min(min, max - 300), max + 5] } },
        series: [{}, { label: 'Earned from this stream (USDC)', stroke: '#7c9cff', fill: 'rgba(124,156,255,.15)' }],
        axes: [{ stroke: '#9aa3b2', grid: { stroke: '#2a2f3a' } }, { stroke: '#9aa3b2', grid: { stroke: '#2a2f3a' } }],
      }, this.points, this.chartEl);
    } else {
      this.chart.setData(this.points);
    }
  }
}

// ---- <sw-leaderboard> ----------------------------------------------------

const LEADERBOARD_CSS = `
ol { list-style: none; margin: .5rem 0 0; padding: 0; display: grid; gap: .25rem; }
li { display: grid; grid-template-columns: 2rem minmax(0, 1fr) auto; gap: .4rem; align-items: center; padding: .3rem .45rem; border-radius: 6px; background: #0f1116; }
li.first { background: #2a2340; border: 1px solid #5b4b9a; }
li.me .who { color: var(--sw-ok); }
.rank { font-weight: 700; color: var(--sw-muted); text-align: center; }
li.first .rank { color: #ffd166; }
.who { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.total { font-variant-numeric: tabular-nums; font-weight: 600; }
.head { display: flex; justify-content: space-between; align-items: baseline; gap: .5rem; }
.tag { font-size: .75rem; font-weight: 700; padding: .1rem .45rem; border-radius: 999px; background: #333; text-transform: uppercase; letter-spacing: .04em; }
`;

/**
 * An event's tip leaderboard, live: <sw-leaderboard event="EVENT_ID" stream="STREAM_ID">.
 * Read once, then kept current by the stream's events (`leaderboard` messages).
 */
class SwLeaderboard extends Base {
  constructor() {
    super(LEADERBOARD_CSS);
    this.standings = [];
    this.frozen = false;
  }

  connectedCallback() {
    this.list = h('ol', { 'aria-label': 'Top tippers', 'aria-live': 'polite' });
    this.tag = h('span', { class: 'tag', hidden: true }, 'Final');
    this.note = h('p', { class: 'muted', role: 'status' });
    this.body.append(h('div', { class: 'panel' },
      h('div', { class: 'head' }, h('strong', {}, 'Tip leaderboard'), this.tag),
      h('small', { class: 'muted' }, 'The top tipper when the show is finalized gets its collectible.'),
      this.list, this.note));
    this.stopAuth = this.watchAuth(() => this.render());
    this.onTipped = () => setTimeout(() => this.refresh(), 300);
    window.addEventListener('sw-tipped', this.onTipped);
    this.refresh();
    this.connect();
    // Read on a timer too, so the board converges even without a socket.
    this.timer = setInterval(() => { if (!this.frozen) this.refresh(); }, 10_000);
  }

  disconnectedCallback() {
    this.closed = true;
    this.socket?.close();
    this.stopAuth?.();
    clearInterval(this.timer);
    window.removeEventListener('sw-tipped', this.onTipped);
  }

  async refresh() {
    const id = this.getAttribute('event');
    if (!id) return;
    try {
      const board = await this.api(`/api/v1/events/${encodeURIComponent(id)}/leaderboard`);
      this.frozen = Boolean(board.frozen);
      this.standings = board.standings ?? [];
      this.note.className = 'muted';
      this.note.textContent = '';
      this.render();
    } catch (err) {
      this.note.className = 'error';
      this.note.textContent = `Cannot read the leaderboard: ${err.message}`;
    }
  }

  connect() {
    const stream = this.getAttribute('stream');
    if (!stream || this.closed) return;
    const socket = new WebSocket(wsUrl(this.server, `/api/v1/streams/${encodeURIComponent(stream)}/events`));
    this.socket = socket;
    socket.onmessage = (m) => {
      let event;
      try { event = JSON.parse(m.data); } catch { return; }
      if (event.type === 'leaderboard' && Array.isArray(event.standings)) {
        this.standings = event.standings;
        if (event.frozen != null) this.frozen = Boolean(event.frozen);
        this.render();
      }
      if (event.type === 'state' && event.state === 'ended') setTimeout(() => this.refresh(), 1000);
    };
    socket.onclose = () => { if (!this.closed && !this.frozen) setTimeout(() => this.connect(), 3000); };
  }

  render() {
    if (!this.list) return;
    const me = this.auth()?.address;
    this.tag.hidden = !this.frozen;
    this.dataset.frozen = String(this.frozen);
    if (!this.standings.length) {
      this.list.replaceChildren(h('li', { class: 'empty' }, h('span'), h('span', { class: 'muted' }, this.frozen ? 'Nobody tipped.' : 'No tips yet: be the first.')));
      return;
    }
    const limit = Number(this.getAttribute('limit')) || 10;
    this.list.replaceChildren(...this.standings.slice(0, limit).map((s) => {
      const mine = me && s.tipper?.toLowerCase() === me;
      return h('li', { class: [s.rank === 1 ? 'first' : '', mine ? 'me' : ''].join(' ').trim() || null, dataset: { rank: s.rank, tipper: s.tipper?.toLowerCase(), total: s.total } },
        h('span', { class: 'rank' }, String(s.rank)),
        h('span', { class: 'who', title: s.tipper }, shortAddress(s.tipper), mine ? ' (you)' : ''),
        h('span', { class: 'total' }, formatAmount(s.total)));
    }));
  }
}

const elements = { 'sw-wallet': SwWallet, 'sw-player': SwPlayer, 'sw-chat': SwChat, 'sw-tip': SwTip, 'sw-earnings': SwEarnings, 'sw-leaderboard': SwLeaderboard };
for (const [name, element] of Object.entries(elements)) {
  if (!customElements.get(name)) customElements.define(name, element);
}
