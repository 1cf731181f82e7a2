// Shared by the tests: a free TCP port on 127.0.0.1, and a `streamweave
// serve --dev` process on free ports waiting until it answers.
import { createServer } from 'node:net';
import { spawn } from 'node:child_process';

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
