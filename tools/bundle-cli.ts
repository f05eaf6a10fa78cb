/**
 * Bundles the CLI (dist/src/cli/main.js and every module of ours it imports) into one file, dist/bin/mercury.js,
 * the program `npx mercury`, `npm start` and the tests run. Run by `npm run build` after tsc.
 *
 * Why: Node loads an ES module graph one file at a time (resolve, stat, read, compile, link), and `mercury serve`
 * imports about 130 of our modules. Started from the bundle, a node listens about 60 ms sooner (a fresh data directory,
 * start to "listening on", medians of seven starts, alternating: 227 and 229 ms against 282 and 295, 2026-12-06), and
 * a client command starts sooner too (166 and 177 ms against 184 and 234). docs/decisions.md, record 48.
 *
 * Packages from node_modules (lmdb and its native addon, ws) stay outside the bundle and load as before. The
 * dashboard's files are read relative to the module that serves them (src/ui/index.ts), which in the bundle is a chunk
 * in dist/bin: they are copied there. The modules under dist/src stay as tsc wrote them, for the
 * library (`import ... from 'mercury'`) and for tests that import a module directly.
 */
import { build } from 'esbuild';
import { cpSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../', import.meta.url));

await build({
  entryPoints: { mercury: `${dist}src/cli/main.js` },
  outdir: `${dist}bin`,
  bundle: true,
  // The CLI loads the node (lmdb and all) only for `serve`, and other heavy parts only for their commands, through
  // `await import(...)`: split into chunks, those stay lazy. Without splitting, esbuild hoists every external import
  // (lmdb) to the top of the one file, and a client command such as `mercury get` started slower than before.
  splitting: true,
  // Chunks sit beside mercury.js, so that a module's import.meta.url names the same directory in every one.
  chunkNames: '[name]-[hash]',
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  // tsc's source maps are chained, so that a stack trace read with --enable-source-maps names the TypeScript line.
  sourcemap: true,
  logLevel: 'warning',
});
cpSync(`${dist}src/ui/static`, `${dist}bin/static`, { recursive: true });
