// Resumable video uploads (tus 1.0 at /api/v1/uploads) for the studio. An
// interrupted upload resumes where it stopped: tus-js-client remembers each
// upload's address in localStorage, keyed by the account and the file.
import { Upload } from 'tus-js-client';

export const CHUNK_SIZE = 8 * 1024 * 1024;

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
    this.upload = new Upload(file, {
      endpoint: '/api/v1/uploads',
      chunkSize: CHUNK_SIZE,
      retryDelays: [0, 1000, 3000, 5000],
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
    this.set('cancelled');
    try {
      await this.upload.abort(sent);
    } catch { /* the server removes abandoned uploads when they expire */ }
  }
}
