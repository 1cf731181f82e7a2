// Going live from the browser: WHIP (RFC 9725) from a camera and microphone, and the studio panel that does it.
import { currentAuth, h, iceServersOf } from '/assets/streamweave.js';

/**
 * Publishes `media` (a MediaStream) to a stream over WHIP. `token` is the stream key or the owner's sign-in token.
 * Answers { pc, stop } once the server answered; `stop()` ends the publish (and the stream).
 */
export async function whipPublish(streamId, token, media, { base = '' } = {}) {
  const url = new URL(`${base}/api/v1/streams/${streamId}/whip`, location.href).href;
  const pc = new RTCPeerConnection({ iceServers: await iceServersOf(url) });
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
  // The offer goes at once, before gathering: the server is ICE-lite and learns this side's addresses from its
  // connectivity checks, so waiting for candidates would only delay going live.
  await pc.setLocalDescription(await pc.createOffer());
  const authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp', authorization }, body: pc.localDescription.sdp });
  } catch (err) {
    pc.close();
    throw err;
  }
  if (res.status !== 201) {
    pc.close();
    const problem = await res.json().catch(() => ({}));
    throw new Error(problem.detail ?? `the server answered ${res.status}`);
  }
  const session = new URL(res.headers.get('location'), url).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  // The ladder is chosen from the first keyframe's size: keep the camera's resolution while the bandwidth estimate
  // ramps up (lowering the frame rate instead), rather than starting small.
  for (const sender of pc.getSenders()) {
    if (sender.track?.kind !== 'video') continue;
    const parameters = sender.getParameters();
    parameters.degradationPreference = 'maintain-resolution';
    await sender.setParameters(parameters).catch(() => {});
  }
  let stopped = false;
  return {
    pc,
    async stop() {
      if (stopped) return;
      stopped = true;
      try { await fetch(session, { method: 'DELETE', headers: { authorization } }); } finally { pc.close(); }
    },
  };
}

const panels = new Map();

/** The studio's "Go live with camera" panel for a stream; the same element across re-renders, so a broadcast goes on. */
export function cameraPanel(stream) {
  if (!panels.has(stream.id)) panels.set(stream.id, buildCameraPanel(stream));
  return panels.get(stream.id);
}

function buildCameraPanel(stream) {
  const preview = h('video', { muted: true, autoplay: true, playsinline: true, class: 'camera-preview', 'aria-label': 'Camera preview' });
  preview.muted = true;
  const camera = h('select', { name: 'camera', 'aria-label': 'Camera' });
  const microphone = h('select', { name: 'microphone', 'aria-label': 'Microphone' });
  const status = h('p', { class: 'muted', role: 'status', 'data-camera-status': '' });
  const start = h('button', { class: 'secondary' }, 'Start camera');
  const mute = h('button', { class: 'secondary', disabled: true, 'aria-pressed': 'false' }, 'Mute microphone');
  const live = h('button', { disabled: true }, 'Go live');
  const end = h('button', { class: 'danger', disabled: true }, 'End stream');
  let media = null;
  let publish = null;

  const listDevices = async () => {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const fill = (select, kind, none) => {
      const current = select.value;
      select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => h('option', { value: d.deviceId }, d.label || `${none} ${i + 1}`)));
      if (current) select.value = current;
    };
    fill(camera, 'videoinput', 'Camera');
    fill(microphone, 'audioinput', 'Microphone');
  };
  const openMedia = async () => {
    media?.getTracks().forEach((t) => t.stop());
    media = await navigator.mediaDevices.getUserMedia({
      video: camera.value ? { deviceId: { exact: camera.value }, width: { ideal: 1280 }, height: { ideal: 720 } } : { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: microphone.value ? { deviceId: { exact: microphone.value } } : true,
    });
    preview.srcObject = media;
    await listDevices();
    live.disabled = !!publish;
    mute.disabled = false;
    status.textContent = publish ? status.textContent : 'Camera on: not live yet.';
  };
  const fail = (err) => { status.className = 'error'; status.textContent = err.message ?? String(err); };
  start.addEventListener('click', () => { status.className = 'muted'; openMedia().catch(fail); });
  // A device chosen while live would need the connection renegotiated: choose before going live.
  for (const select of [camera, microphone]) select.addEventListener('change', () => { if (media && !publish) openMedia().catch(fail); });
  mute.addEventListener('click', () => {
    const track = media?.getAudioTracks()[0];
    if (!track) return;
    track.enabled = !track.enabled;
    mute.setAttribute('aria-pressed', String(!track.enabled));
    mute.textContent = track.enabled ? 'Mute microphone' : 'Unmute microphone';
  });
  live.addEventListener('click', async () => {
    const auth = currentAuth();
    if (!media || !auth) return;
    live.disabled = true;
    status.className = 'muted';
    status.textContent = 'Connecting…';
    try {
      publish = await whipPublish(stream.id, auth.token, media);
      const pc = publish.pc;
      pc.addEventListener('connectionstatechange', () => {
        if (pc.connectionState === 'connected') { status.className = 'ok'; status.textContent = 'Live from your camera.'; }
        if (pc.connectionState === 'failed') fail(new Error('The connection to the server failed.'));
      });
      end.disabled = false;
      camera.disabled = true;
      microphone.disabled = true;
    } catch (err) {
      publish = null;
      live.disabled = false;
      fail(err);
    }
  });
  end.addEventListener('click', async () => {
    end.disabled = true;
    try { await publish?.stop(); } catch (err) { fail(err); return; }
    publish = null;
    media?.getTracks().forEach((t) => t.stop());
    media = null;
    preview.srcObject = null;
    mute.disabled = true;
    camera.disabled = false;
    microphone.disabled = false;
    status.className = 'muted';
    status.textContent = 'Stream ended: the recording is being archived.';
  });
  if (!globalThis.RTCPeerConnection || !navigator.mediaDevices?.getUserMedia) {
    start.disabled = true;
    status.textContent = 'This browser cannot send a camera over WebRTC.';
  }
  return h('div', { class: 'panel', 'data-camera-panel': stream.id }, h('h2', {}, 'Go live with camera'),
    preview, h('div', { class: 'row' }, h('label', {}, 'Camera', camera), h('label', {}, 'Microphone', microphone)),
    h('div', { class: 'row' }, start, mute, live, end), status);
}
