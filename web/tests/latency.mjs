// Glass-to-glass latency, measured in a real browser: a publisher draws
// `Date.now()` into every frame as a barcode and sends it over RTMP; a page
// in Chromium plays the stream with hls.js and, for each frame it displays
// (requestVideoFrameCallback), reads the barcode back and subtracts it from
// the time the frame was shown. Publisher and browser share this machine's
// clock. Used by tests/latency.test.mjs (the measurement works) and by
// scripts/bench/latency.sh (the figures in docs/benchmarks.md).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

/** Frame size and the barcode's grid: 10 x 6 cells of 32x40 pixels. */
export const WIDTH = 320;
export const HEIGHT = 240;
const CELL_WIDTH = 32;
const CELL_HEIGHT = 40;
const COLUMNS = WIDTH / CELL_WIDTH;
const ROWS = HEIGHT / CELL_HEIGHT;
/** 44 bits of milliseconds (to the year 2527), then an 8-bit check. */
const TIME_BITS = 44;

function checkByte(time) {
  let sum = 0x5a;
  for (let shift = 0; shift < TIME_BITS; shift += 8) sum = (sum + Math.floor(time / 2 ** shift) % 256) % 256;
  return sum;
}

/** The bits a frame showing `time` carries, first cell first (52 of 60). */
export function encodeTime(time) {
  const bits = [];
  for (let i = TIME_BITS - 1; i >= 0; i--) bits.push(Math.floor(time / 2 ** i) % 2);
  const check = checkByte(time);
  for (let i = 7; i >= 0; i--) bits.push((check >> i) & 1);
  return bits;
}

/** The time read back from its 52 bits, or null when the check fails. */
export function decodeTime(bits) {
  let time = 0;
  for (let i = 0; i < TIME_BITS; i++) time = time * 2 + bits[i];
  let check = 0;
  for (let i = TIME_BITS; i < TIME_BITS + 8; i++) check = check * 2 + bits[i];
  return check === checkByte(time) ? time : null;
}

/** One gray frame of the barcode for `time` (luma only). */
function frame(time) {
  const bits = encodeTime(time);
  const pixels = Buffer.alloc(WIDTH * HEIGHT);
  for (let row = 0; row < ROWS; row++) {
    for (let column = 0; column < COLUMNS; column++) {
      if (!bits[row * COLUMNS + column]) continue;
      for (let y = row * CELL_HEIGHT; y < (row + 1) * CELL_HEIGHT; y++) pixels.fill(235, y * WIDTH + column * CELL_WIDTH, y * WIDTH + (column + 1) * CELL_WIDTH);
    }
  }
  return pixels;
}

/**
 * Publishes `seconds` of clock frames at 30 fps to `url` (RTMP) through
 * ffmpeg with low-latency x264 settings, as OBS's low-latency profile sends.
 * Answers { done } resolving when ffmpeg exits.
 */
export function publishClock(url, seconds) {
  const ffmpeg = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error',
    '-f', 'rawvideo', '-pix_fmt', 'gray', '-s', `${WIDTH}x${HEIGHT}`, '-framerate', '30', '-i', 'pipe:0',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(seconds), '-map', '0:v', '-map', '1:a',
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '60', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-f', 'flv', url], { stdio: ['pipe', 'ignore', 'inherit'] });
  ffmpeg.stdin.on('error', () => {});
  const started = Date.now();
  let sent = 0;
  const timer = setInterval(() => {
    // Frames due by now (timers drift; the frame count follows the clock).
    const due = Math.min(seconds * 30, Math.floor(((Date.now() - started) * 30) / 1000) + 1);
    while (sent < due) {
      ffmpeg.stdin.write(frame(Date.now()));
      sent++;
    }
    if (sent >= seconds * 30) {
      clearInterval(timer);
      ffmpeg.stdin.end();
    }
  }, 5);
  const done = new Promise((resolve) => ffmpeg.on('exit', (code) => { clearInterval(timer); resolve(code); }));
  return { done, stop: () => { clearInterval(timer); ffmpeg.kill('SIGKILL'); } };
}

/**
 * Publishes the clock from `page` (Chromium) over WHIP: a canvas on which
 * each frame carries `Date.now()` as the same barcode, captured at 30 fps,
 * with a tone for audio. `token` is the stream key. Answers { pc, stop }
 * once the server answered; the page must stay open while it publishes.
 */
export async function publishClockWhip(page, base, streamId, token) {
  await page.evaluate(async ({ url, token, geometry }) => {
    const { width, height, cellWidth, cellHeight, columns, timeBits } = geometry;
    const checkByte = (time) => {
      let sum = 0x5a;
      for (let shift = 0; shift < timeBits; shift += 8) sum = (sum + Math.floor(time / 2 ** shift) % 256) % 256;
      return sum;
    };
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    document.body.append(canvas);
    const context = canvas.getContext('2d');
    const draw = () => {
      const time = Date.now();
      const bits = [];
      for (let i = timeBits - 1; i >= 0; i--) bits.push(Math.floor(time / 2 ** i) % 2);
      const check = checkByte(time);
      for (let i = 7; i >= 0; i--) bits.push((check >> i) & 1);
      context.fillStyle = '#000';
      context.fillRect(0, 0, width, height);
      context.fillStyle = '#ebebeb';
      bits.forEach((bit, i) => { if (bit) context.fillRect((i % columns) * cellWidth, Math.floor(i / columns) * cellHeight, cellWidth, cellHeight); });
    };
    draw();
    window.clockTimer = setInterval(draw, 5);
    const media = canvas.captureStream(30);
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const sink = audio.createMediaStreamDestination();
    tone.connect(sink);
    tone.start();
    media.addTrack(sink.stream.getAudioTracks()[0]);
    const pc = new RTCPeerConnection();
    for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => { if (pc.iceGatheringState === 'complete') r(); else pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); }; setTimeout(r, 2000); });
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` }, body: pc.localDescription.sdp });
    if (res.status !== 201) throw new Error(`WHIP answered ${res.status}: ${await res.text()}`);
    window.whipSession = new URL(res.headers.get('location'), url).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    for (const sender of pc.getSenders()) {
      if (sender.track?.kind !== 'video') continue;
      const parameters = sender.getParameters();
      parameters.degradationPreference = 'maintain-resolution';
      await sender.setParameters(parameters).catch(() => {});
    }
    window.whipPc = pc;
  }, { url: `${base}/api/v1/streams/${streamId}/whip`, token, geometry: { width: WIDTH, height: HEIGHT, cellWidth: CELL_WIDTH, cellHeight: CELL_HEIGHT, columns: COLUMNS, timeBits: TIME_BITS } });
  return {
    stop: () => page.evaluate(async (token) => {
      clearInterval(window.clockTimer);
      await fetch(window.whipSession, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } }).catch(() => {});
      window.whipPc.close();
    }, token),
  };
}

/** Waits until the stream's first rendition lists a whole segment (what a
 * player needs to start; before that a live playlist has only parts). */
export async function firstSegment(base, streamId) {
  for (let i = 0; i < 300; i++) {
    const stream = await (await fetch(`${base}/api/v1/streams/${streamId}`)).json();
    const rendition = stream.renditions?.[0]?.name;
    if (rendition) {
      const playlist = await (await fetch(`${base}/live/${streamId}/${rendition}/index.m3u8`)).text();
      if (playlist.includes('#EXTINF')) return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no segment within 30 s');
}

/**
 * Opens `url` in `page` and collects, for `seconds`, the latency of every
 * displayed frame whose barcode reads. `url` is a playlist played with
 * hls.js (low-latency mode or not), or with `whep: true` a WHEP endpoint
 * (`bearer` for a paid stream's session). Gives up `firstFrameWaitMs`
 * after `seconds` without a first frame. Answers { samples (ms),
 * firstFrameMs, unreadable, notices (WHEP data channel messages),
 * maxGapMs (the longest freeze) }.
 */
export async function watchLatency(page, url, { lowLatencyMode = false, whep = false, bearer = null, seconds, firstFrameWaitMs = 30_000 }) {
  if (!whep) {
    const require = createRequire(import.meta.url);
    await page.addScriptTag({ path: require.resolve('hls.js/dist/hls.min.js') });
  }
  return page.evaluate(async ({ url, lowLatencyMode, whep, bearer, seconds, firstFrameWaitMs, geometry }) => {
    const { width, height, cellWidth, cellHeight, columns, rows, timeBits } = geometry;
    const checkByte = (time) => {
      let sum = 0x5a;
      for (let shift = 0; shift < timeBits; shift += 8) sum = (sum + Math.floor(time / 2 ** shift) % 256) % 256;
      return sum;
    };
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    document.body.append(video);
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const opened = performance.now();
    const notices = [];
    let hls = null;
    let pc = null;
    let session = null;
    if (whep) {
      pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const channel = pc.createDataChannel('notices');
      channel.onmessage = (e) => notices.push(JSON.parse(e.data));
      pc.ontrack = (e) => { if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]); };
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((r) => { if (pc.iceGatheringState === 'complete') r(); else pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); }; setTimeout(r, 2000); });
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) }, body: pc.localDescription.sdp });
      if (res.status !== 201) throw new Error(`WHEP answered ${res.status}: ${await res.text()}`);
      session = new URL(res.headers.get('location'), url).href;
      await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    } else {
      // eslint-disable-next-line no-undef
      // As the web player: catch up to the target latency by playing up to 1.5x.
      hls = new Hls({ lowLatencyMode, maxLiveSyncPlaybackRate: 1.5 });
      hls.loadSource(url);
      hls.attachMedia(video);
    }
    video.play().catch(() => {});
    const samples = [];
    let unreadable = 0;
    let firstFrameMs = null;
    // The longest time between two displayed frames (a freeze).
    let lastShownAt = null;
    let maxGapMs = 0;
    await new Promise((resolve, reject) => {
      // eslint-disable-next-line no-undef
      hls?.on(Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) reject(new Error(`hls.js: ${data.details}`));
      });
      let stopAt = null;
      // No picture at all within the wait: answer with no samples.
      setTimeout(resolve, firstFrameWaitMs + seconds * 1000);
      const onFrame = (_now, metadata) => {
        const shownAt = performance.timeOrigin + metadata.expectedDisplayTime;
        if (lastShownAt !== null) maxGapMs = Math.max(maxGapMs, shownAt - lastShownAt);
        lastShownAt = shownAt;
        if (firstFrameMs === null) {
          firstFrameMs = metadata.expectedDisplayTime - opened;
          stopAt = performance.now() + seconds * 1000;
          // Also when the picture stops (a paused WHEP session), counting the freeze up to now.
          setTimeout(() => {
            if (lastShownAt !== null) maxGapMs = Math.max(maxGapMs, performance.timeOrigin + performance.now() - lastShownAt);
            resolve();
          }, seconds * 1000 + 100);
        }
        context.drawImage(video, 0, 0, width, height);
        const pixels = context.getImageData(0, 0, width, height).data;
        const bits = [];
        for (let row = 0; row < rows && bits.length < timeBits + 8; row++) {
          for (let column = 0; column < columns && bits.length < timeBits + 8; column++) {
            const x = column * cellWidth + cellWidth / 2;
            const y = row * cellHeight + cellHeight / 2;
            bits.push(pixels[(y * width + x) * 4] > 128 ? 1 : 0);
          }
        }
        let time = 0;
        for (let i = 0; i < timeBits; i++) time = time * 2 + bits[i];
        let check = 0;
        for (let i = timeBits; i < timeBits + 8; i++) check = check * 2 + bits[i];
        if (check === checkByte(time)) samples.push(shownAt - time);
        else unreadable++;
        if (performance.now() >= stopAt) resolve();
        else video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    });
    hls?.destroy();
    if (pc) {
      await fetch(session, { method: 'DELETE' }).catch(() => {});
      pc.close();
    }
    video.remove();
    return { samples, firstFrameMs, unreadable, notices, maxGapMs };
  }, { url, lowLatencyMode, whep, bearer, seconds, firstFrameWaitMs, geometry: { width: WIDTH, height: HEIGHT, cellWidth: CELL_WIDTH, cellHeight: CELL_HEIGHT, columns: COLUMNS, rows: ROWS, timeBits: TIME_BITS } });
}

/** The p-th percentile (0..100) of `values`. */
export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * The benchmark (scripts/bench/latency.sh): `node tests/latency.mjs BIN
 * [seconds]` starts BIN, publishes the clock over RTMP (ffmpeg) and over
 * WHIP (a canvas in Chromium), and measures LL-HLS, plain HLS and WHEP in
 * turn in Chromium, then WHEP with 5 % of datagrams lost; prints one
 * markdown table.
 */
async function bench(bin, seconds) {
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { chromium } = await import('playwright-core');
  const { generatePrivateKey, privateKeyToAccount } = await import('viem/accounts');
  const { api, signInNode, startServer, stopAndRemove, until } = await import('./support.mjs');
  const browser = await chromium.launch({ executablePath: process.env.STREAMWEAVE_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
  const ms = (v) => `${Math.round(v)} ms`;
  const row = (name, { samples, firstFrameMs, maxGapMs }) => console.log(`| ${name} | ${samples.length} | ${ms(percentile(samples, 50))} | ${ms(percentile(samples, 95))} | ${ms(Math.max(...samples))} | ${ms(firstFrameMs)} | ${ms(maxGapMs)} |`);
  /** A server (with `args`) and a stream on it, published by `publish(server, stream)`. */
  const withStream = async (args, publish, measure) => {
    const dir = mkdtempSync(join(tmpdir(), 'sw-latency-bench-'));
    const server = await startServer(bin, dir, args);
    let publisher;
    try {
      const token = await signInNode(server.base, privateKeyToAccount(generatePrivateKey()));
      const stream = await api(server.base, '/api/v1/streams', { method: 'POST', token, body: { title: 'clock' } });
      publisher = await publish(server, stream);
      await until('the stream to go live', async () => (await api(server.base, `/api/v1/streams/${stream.id}`)).state === 'live');
      // A few segments in, as a viewer joining a running stream.
      await firstSegment(server.base, stream.id);
      await new Promise((r) => setTimeout(r, 6000));
      const page = await browser.newPage();
      await page.goto(`${server.base}/api/v1/streams`);
      await measure(server, stream, page);
    } finally {
      await publisher?.stop();
      await stopAndRemove(server.child, dir);
    }
  };
  const overRtmp = async (server, stream) => publishClock(`rtmp://${server.rtmp}/live/${stream.stream_key}`, 3 * seconds + 60);
  const overWhip = async (server, stream) => {
    const page = await browser.newPage();
    await page.goto(`${server.base}/api/v1/streams`);
    const published = await publishClockWhip(page, server.base, stream.id, stream.stream_key);
    return { stop: async () => { await published.stop().catch(() => {}); await page.close(); } };
  };
  try {
    console.log('| publisher -> viewer | frames | p50 | p95 | max | first frame | longest freeze |');
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    await withStream([], overRtmp, async (server, stream, page) => {
      const url = `${server.base}/live/${stream.id}/master.m3u8`;
      row('RTMP (ffmpeg) -> LL-HLS (hls.js low-latency mode)', await watchLatency(page, url, { lowLatencyMode: true, seconds }));
      row('RTMP (ffmpeg) -> HLS, 2 s segments (hls.js, parts ignored)', await watchLatency(page, url, { lowLatencyMode: false, seconds }));
    });
    await withStream([], overWhip, async (server, stream, page) => {
      row('WHIP (Chromium) -> WHEP', await watchLatency(page, `${server.base}/api/v1/streams/${stream.id}/whep`, { whep: true, seconds }));
      row('WHIP (Chromium) -> LL-HLS (hls.js low-latency mode)', await watchLatency(page, `${server.base}/live/${stream.id}/master.m3u8`, { lowLatencyMode: true, seconds }));
    });
    await withStream(['--webrtc-simulated-loss-percent', '5'], overWhip, async (server, stream, page) => {
      row('WHIP -> WHEP, 5 % of datagrams lost both ways', await watchLatency(page, `${server.base}/api/v1/streams/${stream.id}/whep`, { whep: true, seconds }));
    });
  } finally {
    await browser.close();
  }
}

const { fileURLToPath } = await import('node:url');
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [bin, seconds = '30'] = process.argv.slice(2);
  if (!bin) {
    console.error('usage: node tests/latency.mjs BIN [seconds]');
    process.exit(2);
  }
  await bench(bin, Number(seconds));
  process.exit(0);
}
