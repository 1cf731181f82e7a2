// The binary deploys the escrow and the test token from the creation code in
// crates/chain/artifacts/ (`streamweave chain deploy`): it must be exactly
// what forge builds from these sources. scripts/contract-artifacts refreshes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('the embedded creation code is what forge builds', () => {
  execFileSync(join(root, 'node_modules/.bin/forge'), ['build', '--quiet'], { cwd: root, stdio: 'inherit' });
  for (const name of ['StreamWeaveEscrow', 'TestUSDC']) {
    const built = JSON.parse(readFileSync(join(root, `out/${name}.sol/${name}.json`), 'utf8')).bytecode.object.replace(/^0x/, '');
    const embedded = readFileSync(join(root, `../crates/chain/artifacts/${name}.hex`), 'utf8').trim();
    assert.equal(embedded, built, `${name}: run scripts/contract-artifacts`);
  }
});
