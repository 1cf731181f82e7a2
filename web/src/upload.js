// Resumable video uploads (tus 1.0 at /api/v1/uploads) for the studio. An
// interrupted upload resumes where it stopped: tus-js-client remembers each
// upload's address in localStorage, keyed by the account and the file.
//
// Every PATCH carries `Upload-Checksum: sha256 <base64>` of its body (the tus
// checksum extension), so bytes damaged on the way are refused (460) and the
// chunk is sent again. The server keeps nothing of a checksummed chunk cut
// short, so an interrupted upload goes on from its last whole chunk.
import { Upload, defaultOptions } from 'tus-js-client';

/** The bytes of one PATCH: each is hashed in memory before it is sent. */
export const CHUNK_SIZE = 8 * 1024 * 1024;

/** tus checksum extension: the chunk does not hash to its Upload-Checksum. */
const CHECKSUM_MISMATCH = 460;

function base64(bytes) {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

/**
 * Checksums for tus-js-client: a `fileReader` whose slices (one a PATCH body,
 * as `chunkSize` bounds them) are read into memory and hashed with SHA-256,
 * and an `onBeforeRequest` that puts the digest of the slice just read on
 * the PATCH at that slice's offset. `generation()` changes when the upload is
 * paused or cancelled: a slice hashed across that is never sent (a PATCH
 * can no longer be aborted before it starts, so it must not start). Without
 * crypto.subtle (a page on plain http other than localhost) nothing is
 * added and uploads go without checksums.
 */
export function checksums(baseReader, { generation = () => 0, subtle = globalThis.crypto?.subtle } = {}) {
  if (!subtle) return {};
  let last = null; // { offset, checksum } of the slice read last: the next PATCH's body
  const fileReader = {
    async openFile(input, chunkSize) {
      const source = await baseReader.openFile(input, chunkSize);
      return {
        size: source.size,
        close: () => source.close(),
        async slice(start, end) {
          const from = generation();
          const read = await source.slice(start, end);
          const { value } = read;
          if (value == null) {
            last = null;
            return read;
          }
          let bytes;
          let checksum;
          try {
            bytes = value instanceof Uint8Array ? value : new Uint8Array(await value.arrayBuffer());
            checksum = `sha256 ${base64(new Uint8Array(await subtle.digest('SHA-256', bytes)))}`;
          } catch {
            last = null;
            return read; // unreadable here: sent as it is (without a checksum), failing as before
          }
          if (generation() !== from) return new Promise(() => {}); // paused or cancelled meanwhile
          last = { offset: start, checksum };
          // What is sent is exactly what was hashed.
          return { ...read, value: value instanceof Uint8Array ? value : new Blob([bytes]) };
        },
      };
    },
  };
  const onBeforeRequest = (req) => {
    if (req.getMethod() !== 'PATCH') return;
    if (last && last.offset === Number(req.getHeader('Upload-Offset'))) req.setHeader('Upload-Checksum', last.checksum);
    last = null;
  };
  return { fileReader, onBeforeRequest };
}

/**
 * tus-js-client's own rule (retry unless a 4xx other than 409 Conflict and
 * 423 Locked, and not while offline), and a 460 too: the chunk goes again.
 */
export function shouldRetry(err) {
  const status = err?.originalResponse ? err.originalResponse.getStatus() : 0;
  if (status === CHECKSUM_MISMATCH) return true;
  const online = typeof navigator === 'undefined' || navigator.onLine !== false;
  return (status < 400 || status >= 500 || status === 409 || status === 423) && online;
}

/** "1536000" bytes -> "1.5 MB". */
export function formatBytes(bytes) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The problem+json detail of a failed tus request, or the error's own message. */
function uploadErrorText(err) {
  const res = err?.originalResponse;
  if (res) {
    const status = res.getStatus();
    try {
      const problem = JSON.parse(res.getBody() || '{}');
      if (problem.detail || problem.title) return problem.detail || problem.title;
    } catch { /* not JSON */ }
    if (status === 401) return 'sign in again to upload';
    if (status === 413) return 'the file is over the size limit or your storage quota';
    return `the server answered ${status}`;
  }
  if (err?.originalRequest) return 'the server cannot be reached; resume to try again';
  return err?.message || String(err);
}

/**
 * One file uploading for the account `auth`. Callbacks: onProgress(sent,
 * total), onState(state) with state uploading | paused | done | cancelled |
 * failed, onError(text), onDone(uploadId).
 */
export class VideoUpload {
  constructor(file, auth, { onProgress = () => {}, onState = () => {}, onError = () => {}, onDone = () => {} } = {}) {
    this.file = file;
    this.state = 'idle';
    this.onState = onState;
    // Bumped by pause and cancel: a chunk hashed across one is not sent.
    this.generation = 0;
    this.upload = new Upload(file, {
      endpoint: '/api/v1/uploads',
      chunkSize: CHUNK_SIZE,
      ...checksums(defaultOptions.fileReader, { generation: () => this.generation }),
      retryDelays: [0, 1000, 3000, 5000],
      onShouldRetry: shouldRetry,
      headers: { Authorization: `Bearer ${auth.token}` },
      metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
      // One account's uploads are not another's: the address is part of the key.
      fingerprint: async (f) => ['streamweave-upload', auth.address, f.name, f.type, f.size, f.lastModified].join(':'),
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => onProgress(sent, total),
      onError: (err) => { this.set('failed'); onError(uploadErrorText(err)); },
      onSuccess: () => {
        this.set('done');
        onDone(this.upload.url.split('/').pop());
      },
    });
  }

  set(state) {
    this.state = state;
    this.onState(state);
  }

  /** Starts, resuming an earlier upload of the same file by this account if there is one. */
  async start() {
    const previous = await this.upload.findPreviousUploads();
    if (previous.length) this.upload.resumeFromPreviousUpload(previous[0]);
    this.resumed = previous.length > 0;
    this.set('uploading');
    this.upload.start();
  }

  pause() {
    if (this.state !== 'uploading') return;
    this.generation += 1;
    this.upload.abort(false);
    this.set('paused');
  }

  /** Goes on from where the server's copy ends (with a fresh sign-in, when given). */
  resume(auth) {
    if (this.state !== 'paused' && this.state !== 'failed') return;
    if (auth) this.upload.options.headers.Authorization = `Bearer ${auth.token}`;
    this.set('uploading');
    this.upload.start();
  }

  /** Stops and removes the bytes sent so far from the server. */
  async cancel() {
    const sent = Boolean(this.upload.url);
    this.generation += 1;
    this.set('cancelled');
    try {
      await this.upload.abort(sent);
    } catch { /* the server removes abandoned uploads when they expire */ }
  }
}
