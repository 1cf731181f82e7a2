// Builds the browser assets the streamweave binary embeds: one ES module of
// web components (dist/assets/streamweave.js, also for other sites), the
// pages' script (dist/assets/app.js, which imports the first), the style
// sheet and the HTML pages (one shell each).
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
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

// The pages share one shell; src/app.js fills <main> by `data-page`.
const pages = { index: 'Discover', watch: 'Watch', library: 'Library', creator: 'Creator', events: 'Events', event: 'Event', market: 'Market', membership: 'Membership', studio: 'Studio', account: 'Account' };
for (const [page, title] of Object.entries(pages)) {
  writeFileSync(join(out, 'pages', `${page}.html`), `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · StreamWeave</title>
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/streamweave.js"></script>
<script type="module" src="/assets/app.js"></script>
</head>
<body data-page="${page}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <a class="logo" href="/">StreamWeave</a>
  <nav aria-label="Main">
    <a href="/">Discover</a>
    <a href="/library">Library</a>
    <a href="/events">Events</a>
    <a href="/market">Market</a>
    <a href="/membership">Membership</a>
    <a href="/studio">Studio</a>
    <a href="/account">Account</a>
  </nav>
  <sw-wallet></sw-wallet>
</header>
<main id="main"><p class="muted" role="status">Loading…</p></main>
<noscript><p>StreamWeave's pages need JavaScript.</p></noscript>
</body>
</html>
`);
}
