// Builds the browser assets the streamweave binary embeds: one ES module of
// web components (dist/assets/streamweave.js, also for other sites), the
// pages' script (dist/assets/app.js, which imports the first), the style
// sheet and the HTML pages.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist');
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });
mkdirSync(join(out, 'pages'), { recursive: true });

const common = {
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2022'],
  legalComments: 'none',
  loader: { '.css': 'text' },
  logLevel: 'warning',
};
await esbuild.build({
  ...common,
  entryPoints: { streamweave: join(here, 'src/components.js') },
  outdir: join(out, 'assets'),
});
await esbuild.build({
  ...common,
  entryPoints: { app: join(here, 'src/app.js') },
  outdir: join(out, 'assets'),
  external: ['/assets/streamweave.js'],
});
copyFileSync(join(here, 'src/app.css'), join(out, 'assets/app.css'));
for (const page of readdirSync(join(here, 'pages'))) {
  copyFileSync(join(here, 'pages', page), join(out, 'pages', page));
}
