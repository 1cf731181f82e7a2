// Shared by the tests: a free TCP port on 127.0.0.1, and a `streamweave
// serve --dev` process on free ports waiting until it answers.
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

export function freePort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts the binary in dev mode on `dataDir`; answers { child, base, rtmp }. */
export async function startServer(bin, dataDir, extraArgs = []) {
  const http = `127.0.0.1:${await freePort()}`;
  const rtmp = `127.0.0.1:${await freePort()}`;
  const child = spawn(bin, ['serve', '--dev', '--data-dir', dataDir, '--http', http, '--rtmp', rtmp, ...extraArgs], { stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://${http}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/api/v1/streams`)).ok) break;
    } catch { /* not yet listening */ }
    if (i >= 300) {
      child.kill();
      throw new Error('the server did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, base, rtmp };
}

/**
 * Stops a server and removes its data directory once it has exited: it
 * drains after SIGTERM and may still write blocks until then (killed
 * outright if it has not exited 30 s later).
 */
export async function stopAndRemove(child, dataDir) {
  const exited = child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', resolve));
  child.kill();
  const stuck = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(stuck);
  rmSync(dataDir, { recursive: true, force: true });
}

/** ffmpeg publishing `seconds` of a `size` test pattern with a tone over RTMP. */
export function publish(rtmp, key, seconds, size = '640x360') {
  return spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=30`, '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(seconds), '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '60', '-pix_fmt', 'yuv420p', '-c:a', 'aac',
    '-f', 'flv', `rtmp://${rtmp}/live/${key}`], { stdio: 'ignore' });
}

/** One request; answers {status, data, type} without throwing (the caller asserts). */
export async function call(base, path, { method = 'GET', body, token } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  return { status: res.status, data, type: res.headers.get('content-type') };
}

/** A request that must succeed; answers its JSON. */
export async function api(base, path, options = {}) {
  const { status, data } = await call(base, path, options);
  if (status < 200 || status > 299) throw new Error(`${options.method ?? 'GET'} ${path}: ${status} ${JSON.stringify(data)}`);
  return data;
}

/** Signs a viem account in from Node; answers its bearer token. */
export async function signInNode(base, account) {
  const challenge = await api(base, '/api/v1/auth/challenge', { method: 'POST', body: { address: account.address } });
  const signature = await account.signMessage({ message: challenge.message });
  return (await api(base, '/api/v1/auth/login', { method: 'POST', body: { message: challenge.message, signature } })).token;
}

/** Polls `fn` every half second until it answers something truthy. */
export async function until(what, fn, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** What a page's sign-in stored ({address, token}). */
export const pageAuth = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('streamweave.auth')));
/** The page's player's current time, in seconds. */
export const videoTime = (page) => page.evaluate(() => document.querySelector('sw-player')?.shadowRoot.querySelector('video')?.currentTime ?? 0);

/** web/src/upload.js's CHUNK_SIZE: the most one PATCH carries. */
export const CHUNK_SIZE = 8 * 1024 * 1024;

/** A 12 s noisy test pattern with a tone, about 11 MB: two chunks, the second big enough to pause in on a slow link. */
export function makeTwoChunkVideo(path) {
  execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '12', '-vf', 'noise=alls=12:allf=t', '-c:v', 'libx264', '-preset', 'ultrafast', '-b:v', '7M', '-maxrate', '7M', '-bufsize', '14M', '-g', '60',
    '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', '-movflags', '+faststart', path]);
}

/** Uploads a file in one tus PATCH and makes a video of it. */
export async function uploadVideo(base, token, file, details) {
  const bytes = readFileSync(file);
  const auth = { authorization: `Bearer ${token}`, 'tus-resumable': '1.0.0' };
  const created = await fetch(`${base}/api/v1/uploads`, { method: 'POST', headers: { ...auth, 'upload-length': String(bytes.length) } });
  assert.equal(created.status, 201);
  const location = created.headers.get('location');
  const patched = await fetch(new URL(location, base), { method: 'PATCH', headers: { ...auth, 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' }, body: bytes });
  assert.equal(patched.status, 204);
  return api(base, '/api/v1/videos', { method: 'POST', token, body: { upload_id: location.split('/').pop(), ...details } });
}
