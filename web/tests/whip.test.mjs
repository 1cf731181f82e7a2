// Going live from the browser over WHIP (RFC 9725), in Chromium with its fake
// camera and microphone: the studio's "Go live with camera" publishes, the
// ladder makes segments of both video and audio, and "End stream" ends the
// stream with a complete archive, as after an RTMP publish. The WHIP
// endpoint answers bad input clearly: an offer without H.264 or VP8 video
// (400), a wrong key (401), not SDP (415), a second publisher while live
// (409), an unknown session (404). A publisher that vanishes without a
// DELETE (its page closed) ends its stream once ICE times out, and leaves no
// ffmpeg behind. Screenshot: go-live.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { api, call, signInNode, startServer, until, stopAndRemove } from './support.mjs';

const bin = process.env.STREAMWEAVE_BIN;
const browserPath = process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium';
const results = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results');

/** A WHIP offer from a fresh connection in `page` with the fake camera and microphone (not sent anywhere). */
function browserOffer(page) {
  return page.evaluate(async () => {
    const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    const pc = new RTCPeerConnection();
    for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => { if (pc.iceGatheringState === 'complete') r(); else pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); }; setTimeout(r, 2000); });
    const sdp = pc.localDescription.sdp;
    pc.close();
    media.getTracks().forEach((t) => t.stop());
    return sdp;
  });
}

const postOffer = (base, id, token, sdp, type = 'application/sdp') => fetch(`${base}/api/v1/streams/${id}/whip`, {
  method: 'POST', headers: { 'content-type': type, authorization: `Bearer ${token}` }, body: sdp,
});

/** ffmpeg processes whose command line mentions `dir`. */
function ffmpegsUnder(dir) {
  try {
    return execFileSync('pgrep', ['-af', 'ffmpeg'], { encoding: 'utf8' }).split('\n').filter((line) => line.includes(dir));
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

test('the studio goes live from a camera over WHIP; the stream is laddered and archived; bad offers are refused', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 240_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-whip-'));
  const dataDir = join(work, 'data');
  const { child, base } = await startServer(bin, dataDir);
  let browser;
  try {
    const key = generatePrivateKey();
    const owner = privateKeyToAccount(key);
    const token = await signInNode(base, owner);
    const stream = await api(base, '/api/v1/streams', { method: 'POST', token, body: { title: 'From my camera', access: 'free' } });
    const { stream_key: streamKey } = await api(base, `/api/v1/streams/${stream.id}/key`, { token });

    browser = await chromium.launch({
      executablePath: browserPath,
      args: ['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required'],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    await context.grantPermissions(['camera', 'microphone'], { origin: base });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // Bad input first, with a real offer from this browser.
    await page.goto(`${base}/`);
    const offer = await browserOffer(page);
    assert.match(offer, /m=video/);
    let res = await postOffer(base, stream.id, 'sk_wrong', offer);
    assert.equal(res.status, 401, 'a wrong key');
    assert.match(res.headers.get('content-type'), /problem\+json/);
    res = await postOffer(base, stream.id, streamKey, offer, 'text/plain');
    assert.equal(res.status, 415, 'not application/sdp');
    const audioOnly = offer.split(/(?=^m=)/m).filter((section) => !section.startsWith('m=video')).join('');
    res = await postOffer(base, stream.id, streamKey, audioOnly);
    assert.equal(res.status, 400, 'no video');
    assert.match((await res.json()).detail, /H\.264 or VP8/);
    const av1Only = offer.replace(/^a=rtpmap:(\d+) (VP8|VP9|H264|AV1)\/90000/gm, 'a=rtpmap:$1 AV1/90000');
    res = await postOffer(base, stream.id, streamKey, av1Only);
    assert.equal(res.status, 400, 'no usable video codec');
    res = await postOffer(base, stream.id, streamKey, 'v=0\r\nnot sdp at all');
    assert.equal(res.status, 400, 'not SDP');
    assert.equal((await call(base, `/api/v1/streams/${stream.id}/whip/0123`, { method: 'DELETE', token })).status, 404, 'an unknown session');
    assert.equal((await api(base, `/api/v1/streams/${stream.id}`)).state, 'idle', 'refused offers leave the stream as it was');

    // The studio: camera on, go live.
    await page.goto(`${base}/studio?stream=${stream.id}#demo-key=${key}`);
    const panel = page.locator(`[data-camera-panel="${stream.id}"]`);
    await panel.waitFor({ timeout: 15_000 });
    await panel.getByRole('button', { name: 'Start camera' }).click();
    await panel.locator('[data-camera-status]', { hasText: 'Camera on' }).waitFor({ timeout: 10_000 });
    assert.ok(await panel.locator('select[name=camera] option').count() >= 1, 'cameras listed');
    await panel.getByRole('button', { name: 'Go live' }).click();
    await panel.locator('[data-camera-status]', { hasText: 'Live from your camera.' }).waitFor({ timeout: 15_000 });
    await until('the stream to be live', async () => (await api(base, `/api/v1/streams/${stream.id}`)).state === 'live', 20_000);
    const segments = await until('video and audio segments', async () => {
      const list = await api(base, `/api/v1/streams/${stream.id}/segments`);
      const video = list.filter((s) => s.rendition !== 'audio');
      const audio = list.filter((s) => s.rendition === 'audio');
      return video.length >= 2 && audio.length >= 2 ? list : null;
    }, 30_000);
    assert.ok(segments.every((s) => s.duration_ms > 0 && s.size > 0));
    assert.ok(segments.some((s) => s.rendition === '720p'), 'the ladder starts at the camera\'s 720p, not at a ramping encoder\'s first size');

    // A second publisher while live is refused, and so is a second browser tab's offer.
    res = await postOffer(base, stream.id, streamKey, offer);
    assert.equal(res.status, 409, 'already live');
    assert.match((await res.json()).detail, /already live/);

    // The live playlist lists what the camera sent.
    const master = await (await fetch(`${base}${stream.playback_url}`)).text();
    assert.match(master, /#EXT-X-STREAM-INF/);
    mkdirSync(results, { recursive: true });
    await panel.screenshot({ path: join(results, 'go-live.png') });

    // End: the stream ends and its recording is archived.
    await panel.getByRole('button', { name: 'End stream' }).click();
    await panel.locator('[data-camera-status]', { hasText: 'Stream ended' }).waitFor({ timeout: 10_000 });
    await until('the stream to end', async () => (await api(base, `/api/v1/streams/${stream.id}`)).state === 'ended', 30_000);
    const archive = await until('the archive', async () => {
      const answer = await call(base, `/api/v1/streams/${stream.id}/archive`);
      return answer.status === 200 && answer.data.complete ? answer.data : null;
    }, 30_000);
    assert.ok(archive.segments >= 4, JSON.stringify(archive));
    assert.deepEqual(ffmpegsUnder(dataDir), [], 'no ffmpeg left');

    // A publisher that vanishes: a second stream, its page closed without a DELETE.
    const second = await api(base, '/api/v1/streams', { method: 'POST', token, body: { title: 'Vanishing', access: 'free' } });
    const vanishing = await context.newPage();
    await vanishing.goto(`${base}/studio?stream=${second.id}#demo-key=${key}`);
    const panel2 = vanishing.locator(`[data-camera-panel="${second.id}"]`);
    await panel2.waitFor({ timeout: 15_000 });
    await panel2.getByRole('button', { name: 'Start camera' }).click();
    await panel2.locator('[data-camera-status]', { hasText: 'Camera on' }).waitFor({ timeout: 10_000 });
    await panel2.getByRole('button', { name: 'Go live' }).click();
    await panel2.locator('[data-camera-status]', { hasText: 'Live from your camera.' }).waitFor({ timeout: 15_000 });
    await until('the second stream to have segments', async () => (await api(base, `/api/v1/streams/${second.id}/segments`)).length > 0, 30_000);
    await vanishing.close();
    await until('the vanished publisher\'s stream to end', async () => (await api(base, `/api/v1/streams/${second.id}`)).state === 'ended', 60_000);
    await until('its ffmpeg to be gone', async () => ffmpegsUnder(dataDir).length === 0, 10_000);
    assert.deepEqual(errors, []);
  } finally {
    await browser?.close();
    await stopAndRemove(child, work);
  }
});
