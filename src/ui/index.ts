/**
 * The operator dashboard served by every node at `/ui`: plain HTML, JavaScript and CSS in src/ui/static/, which the
 * build copies next to this module (dist/src/ui/static/). Nothing to build or fetch for the user, no CDN: the page
 * talks to the nodes' own HTTP API (`/v1/status` of every node in the tree, `/v1/kv` and `/v1/txn` of the node that
 * serves it).
 *
 * The files are read once per process and served from memory. Every answer carries a Content-Security-Policy that
 * allows only the page's own script and style (no inline script or style, no eval); `connect-src` allows other
 * nodes because the page walks the tree through each node's status.
 */
import { readFileSync } from 'node:fs';

export interface UiAsset {
  /** The request path, `/ui/...`. */
  readonly path: string;
  readonly contentType: string;
  readonly body: Buffer;
}

/** Where the dashboard lives; `/ui` itself redirects here so that the page's relative URLs resolve under it. */
export const UI_PATH = '/ui/';

export const UI_CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  // The page reads every node's /v1/status, and those are other origins (one port per node).
  "connect-src 'self' http: https:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The shipped files: name in static/ and content type. index.html is served at UI_PATH. */
const FILES: readonly { readonly name: string; readonly contentType: string }[] = [
  { name: 'index.html', contentType: 'text/html; charset=utf-8' },
  { name: 'app.js', contentType: 'text/javascript; charset=utf-8' },
  { name: 'style.css', contentType: 'text/css; charset=utf-8' },
  { name: 'favicon.svg', contentType: 'image/svg+xml' },
];

let assets: readonly UiAsset[] | undefined;

/** The dashboard's files, read from disk on first use. */
export function uiAssets(): readonly UiAsset[] {
  assets ??= FILES.map(({ name, contentType }) => ({
    path: name === 'index.html' ? UI_PATH : `${UI_PATH}${name}`,
    contentType,
    body: readFileSync(new URL(`./static/${name}`, import.meta.url)),
  }));
  return assets;
}
