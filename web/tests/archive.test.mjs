// Archives against independent IPFS and Filecoin tools from npm: a recording
// made by the real binary (STREAMWEAVE_BIN) and ffmpeg is
// 1. the same directory CID ipfs-unixfs-importer gives the same files with
//    Kubo's settings (CIDv1, raw leaves, 256 KiB chunks, 174 links a node);
// 2. a CAR that @ipld/car reads, every block hashing to its CID;
// 3. the Piece CID @web3-storage/data-segment computes for that CAR;
// and `streamweave verify` finds a corrupted block by path and CID; and
// 4. our gateway answers the trustless protocol: a verifying client
//    (ipfs-unixfs-exporter over blocks checked against their CIDs) fetches
//    /ipfs/{root}/master.m3u8 and a segment by path, as a CAR and block by block.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { startServer, stopAndRemove } from './support.mjs';
import { CarReader } from '@ipld/car';
import { Piece } from '@web3-storage/data-segment';
import { importer } from 'ipfs-unixfs-importer';
import { exporter } from 'ipfs-unixfs-exporter';
import { fixedSize } from 'ipfs-unixfs-importer/chunker';
import { balanced } from 'ipfs-unixfs-importer/layout';
import { sha256 } from 'multiformats/hashes/sha2';
import { equals } from 'multiformats/bytes';

const bin = process.env.STREAMWEAVE_BIN;

function run(args) {
  const result = spawnSync(bin, args, { encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function filesUnder(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out;
}

test('a recording is a Kubo-identical folder, a readable CAR and the same Piece CID', { skip: !bin && 'set STREAMWEAVE_BIN to run', timeout: 120_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-archive-'));
  const dataDir = join(work, 'data');
  const { child, base, rtmp } = await startServer(bin, dataDir, ['--admin-token', 'archive-test']);
  try {
    const created = await (await fetch(`${base}/api/v1/streams`, {
      method: 'POST',
      headers: { authorization: 'Bearer archive-test', 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'archive' }),
    })).json();
    const publisher = spawnSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', '6', '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '60', '-pix_fmt', 'yuv420p', '-c:a', 'aac',
      '-f', 'flv', `rtmp://${rtmp}/live/${created.stream_key}`]);
    assert.equal(publisher.status, 0, String(publisher.stderr));
    for (let i = 0; ; i++) {
      const stream = await (await fetch(`${base}/api/v1/streams/${created.id}`)).json();
      if (stream.state === 'ended') break;
      assert.ok(i < 150, 'stream did not end');
      await new Promise((r) => setTimeout(r, 200));
    }
    const archive = await (await fetch(`${base}/api/v1/streams/${created.id}/archive`)).json();
    assert.equal(archive.complete, true, JSON.stringify(archive));

    // The CAR from the CLI: the same numbers as the API.
    const carPath = join(work, 'stream.car');
    const exported = run(['archive', 'export', '--data-dir', dataDir, '--stream', created.id, '--out', carPath]);
    assert.equal(exported.code, 0, exported.stderr);
    const summary = JSON.parse(exported.stdout);
    assert.equal(summary.root_cid, archive.root_cid);
    assert.equal(summary.piece_cid, archive.piece_cid);
    const car = readFileSync(carPath);
    assert.equal(car.length, archive.car_size);

    // 1. The same files through an independent UnixFS importer.
    const folder = join(work, 'folder');
    const files = run(['export', '--data-dir', dataDir, '--stream', created.id, '--out', folder]);
    assert.equal(files.code, 0, files.stderr);
    const source = filesUnder(folder).map((path) => ({ path: `recording/${relative(folder, path)}`, content: readFileSync(path) }));
    const blocks = { put: async (cid) => cid };
    let root;
    for await (const entry of importer(source, blocks, {
      cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true,
      chunker: fixedSize({ chunkSize: 262144 }), layout: balanced({ maxChildrenPerNode: 174 }),
    })) {
      if (entry.path === 'recording') root = entry.cid.toString();
    }
    assert.equal(root, archive.root_cid, 'ipfs-unixfs-importer gives the same root');

    // 2. @ipld/car reads our CAR: one root, every block hashes to its CID.
    const reader = await CarReader.fromBytes(car);
    assert.deepEqual((await reader.getRoots()).map(String), [archive.root_cid]);
    let count = 0;
    for await (const block of reader.blocks()) {
      const digest = await sha256.digest(block.bytes);
      assert.ok(equals(digest.digest, block.cid.multihash.digest), `${block.cid} hashes to its CID`);
      count += 1;
    }
    assert.ok(count > 6);

    // 3. The same Piece CID and padded size.
    const piece = Piece.fromPayload(car);
    assert.equal(Piece.toLink(piece).toString(), archive.piece_cid);
    assert.equal(Number(piece.size), archive.piece_size);

    // 4. The gateway: plain paths, raw blocks and CARs, all verifiable.
    const master = await fetch(`${base}/ipfs/${archive.root_cid}/master.m3u8`);
    assert.equal(master.status, 200);
    assert.equal(master.headers.get('content-type'), 'application/vnd.apple.mpegurl');
    assert.deepEqual(Buffer.from(await master.arrayBuffer()), readFileSync(join(folder, 'master.m3u8')));
    const verified = new Map();
    const checkedBlock = async (cid, bytes) => {
      const digest = await sha256.digest(bytes);
      assert.ok(equals(digest.digest, cid.multihash.digest), `${cid} hashes to its CID`);
      verified.set(cid.toString(), bytes);
    };
    const segmentPath = '360p/0.m4s';
    const carResponse = await fetch(`${base}/ipfs/${archive.root_cid}/${segmentPath}`, { headers: { accept: 'application/vnd.ipld.car' } });
    assert.equal(carResponse.status, 200);
    assert.match(carResponse.headers.get('content-type'), /application\/vnd\.ipld\.car/);
    const pathCar = await CarReader.fromBytes(new Uint8Array(await carResponse.arrayBuffer()));
    assert.deepEqual((await pathCar.getRoots()).map(String), [archive.root_cid]);
    for await (const block of pathCar.blocks()) await checkedBlock(block.cid, block.bytes);
    // A block-by-block client: anything missing comes from ?format=raw, checked too.
    const blockstore = {
      // The exporter reads a block as an async iterable of chunks.
      async *get(cid) {
        if (!verified.has(cid.toString())) {
          const raw = await fetch(`${base}/ipfs/${cid}?format=raw`);
          assert.equal(raw.status, 200, `raw block ${cid}`);
          assert.equal(raw.headers.get('content-type'), 'application/vnd.ipld.raw');
          await checkedBlock(cid, new Uint8Array(await raw.arrayBuffer()));
        }
        yield verified.get(cid.toString());
      },
    };
    for (const path of [segmentPath, 'master.m3u8', 'audio/index.m3u8']) {
      const entry = await exporter(`${archive.root_cid}/${path}`, blockstore);
      const chunks = [];
      for await (const chunk of entry.content()) chunks.push(chunk);
      assert.deepEqual(Buffer.concat(chunks), readFileSync(join(folder, path)), `${path} through the verifying exporter`);
    }
    // A file served twice (the second time from the node's cache) is the
    // same bytes; a directory asked for as a file is refused either way.
    for (let i = 0; i < 2; i++) {
      const segment = await fetch(`${base}/ipfs/${archive.root_cid}/${segmentPath}`);
      assert.equal(segment.status, 200);
      assert.deepEqual(Buffer.from(await segment.arrayBuffer()), readFileSync(join(folder, segmentPath)));
      const directory = await fetch(`${base}/ipfs/${archive.root_cid}`);
      assert.equal(directory.status, 404);
      assert.match(await directory.text(), /is a directory/);
    }
    const missing = await fetch(`${base}/ipfs/${archive.root_cid}/no-such-file`);
    assert.equal(missing.status, 404);
    assert.match(missing.headers.get('content-type'), /problem\+json/);

    // `streamweave verify` passes the CAR and names a corrupted block.
    const remote = run(['verify', '--server', base, '--cid', archive.root_cid]);
    assert.equal(remote.code, 0, remote.stderr);
    assert.equal(JSON.parse(remote.stdout).piece_cid, archive.piece_cid, 'the gateway serves the same CAR');
    const ok = run(['verify', carPath]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).piece_cid, archive.piece_cid);
    const corrupt = Buffer.from(car);
    corrupt[corrupt.length - 10] ^= 0xff;
    const badPath = join(work, 'corrupt.car');
    writeFileSync(badPath, corrupt);
    const bad = run(['verify', badPath]);
    assert.equal(bad.code, 1);
    // The CAR ends with stream.json, the root's last entry in depth-first order.
    assert.match(bad.stderr, /corrupt: \/stream\.json: block \S+ does not hash to its CID/);
  } finally {
    await stopAndRemove(child, work);
  }
});

test('folders too large for one node shard as HAMTs exactly as ipfs-unixfs-importer does', { skip: !bin && 'set STREAMWEAVE_BIN to run' }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'streamweave-hamt-'));
  try {
    // 7000 segment-like names (past the 256 KiB links-bytes threshold) next
    // to a small folder and a playlist.
    const folder = join(work, 'recording');
    mkdirSync(join(folder, '720p'), { recursive: true });
    mkdirSync(join(folder, 'audio'), { recursive: true });
    for (let i = 0; i < 7000; i++) writeFileSync(join(folder, '720p', `${i}.m4s`), `segment ${i}\n`);
    writeFileSync(join(folder, 'audio', '0.m4s'), 'audio\n');
    writeFileSync(join(folder, 'master.m3u8'), '#EXTM3U\n');
    const ours = run(['cid', folder]);
    assert.equal(ours.code, 0, ours.stderr);
    const source = filesUnder(folder).map((path) => ({ path: `recording/${relative(folder, path)}`, content: readFileSync(path) }));
    let root;
    for await (const entry of importer(source, { put: async (cid) => cid }, {
      cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true,
      chunker: fixedSize({ chunkSize: 262144 }), layout: balanced({ maxChildrenPerNode: 174 }),
    })) {
      if (entry.path === 'recording') root = entry.cid.toString();
    }
    assert.equal(ours.stdout.trim(), root);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
