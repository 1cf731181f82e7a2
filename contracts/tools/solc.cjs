#!/usr/bin/env node
// A `solc` command for forge, made of solc-js (the npm package `solc`, the
// compiler built to WebAssembly). forge needs a native compiler binary and
// downloads one by default; this one comes from the npm registry instead.
// It answers the two calls forge makes:
//   solc --version                      (which compiler this is)
//   solc --standard-json [options...]   (Standard JSON in on stdin, out on stdout)
// forge puts every source's content in the Standard JSON input, so the
// path options (--allow-paths, --base-path, --include-path) need no import
// callback here; imports still missing are answered from disk, read-only and
// only under the directories forge allowed.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const args = process.argv.slice(2);

if (args.includes('--version') || args.includes('-v')) {
  // The same shape as the native compiler's answer, which forge parses.
  const version = solc.version().replace(/\.Emscripten\.clang$/, '.Linux.g++');
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${version}\n`);
  process.exit(0);
}

if (!args.includes('--standard-json')) {
  process.stderr.write('this solc (solc-js) only supports --version and --standard-json\n');
  process.exit(2);
}

const roots = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--base-path' || args[i] === '--include-path') roots.push(args[++i]);
  else if (args[i] === '--allow-paths') roots.push(...args[++i].split(','));
}
const allowed = roots.filter(Boolean).map((r) => path.resolve(r));

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath) ? [importPath] : allowed.map((r) => path.join(r, importPath));
  for (const file of candidates) {
    const resolved = path.resolve(file);
    if (!allowed.some((r) => resolved === r || resolved.startsWith(r + path.sep))) continue;
    if (fs.existsSync(resolved)) return { contents: fs.readFileSync(resolved, 'utf8') };
  }
  return { error: `file not found: ${importPath}` };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
