/**
 * Who may talk to a node from a browser: the Host and Origin checks (docs/decisions.md, record 17).
 *
 * - **Host** (DNS rebinding): a web page on evil.example can make its own name resolve to 127.0.0.1 and then read and
 *   write a node on the victim's machine as if it were its own site. Such requests carry `Host: evil.example`. A node
 *   answers only the names it expects: IP literals (a page can only reach one through its own address, so the page is
 *   then the node's own origin), `localhost` and `*.localhost`, the node's own listen and advertised host names, and
 *   the names of `--allowed-hosts` (`.example.com` also allows every name under example.com; `*` allows any name).
 *   Anything else: 403 HOST_NOT_ALLOWED. A request without Host (HTTP/1.0) is not from a browser and is not checked.
 * - **Origin** (cross-site requests): browsers name the page that makes a request in `Origin` (every WebSocket, every
 *   POST, PUT and DELETE, every cross-origin fetch). A write (any method but GET, HEAD and OPTIONS) or a watch upgrade
 *   whose Origin is neither the node's own (the same host and port as its Host header) nor listed in
 *   `--allowed-origins` (`*`: any) is refused 403 ORIGIN_NOT_ALLOWED. Reads are not: a page of another site cannot read
 *   an answer the node does not allow with CORS headers, and `/v1/status` allows every origin for the dashboard, which
 *   polls every node of the tree from the page of one (record 16). Programs other than browsers send no Origin.
 *
 * Pure: the HTTP server and the watch hub call `requestRefusal` with the request's headers.
 */
import { isIP } from 'node:net';
import { MercuryError, parseRequestTarget } from '../api/index.js';

export interface RequestPolicy {
  /**
   * Host names (lower case, without port or trailing dot) this node answers to besides IP literals and localhost:
   * its own listen and advertised names and the operator's `--allowed-hosts`. An entry `.example.com` allows
   * example.com and every name under it; `*` allows every name (the check is off).
   */
  readonly allowedHosts: readonly string[];
  /** Origins (`scheme://host[:port]`, lower case, no default port) allowed besides the node's own; `*` allows every origin. */
  readonly allowedOrigins: readonly string[];
}

/** A policy that allows everything: for embedding code and tests that are not about browsers. */
export const OPEN_REQUEST_POLICY: RequestPolicy = Object.freeze({ allowedHosts: Object.freeze(['*']), allowedOrigins: Object.freeze(['*']) });

/** A Host header split into its name (lower case, no trailing dot, no brackets) and port (undefined when absent). */
function parseHost(host: string): { name: string; port: string | undefined } | undefined {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]*)(?::(\d{1,5}))?$/.exec(host.trim());
  if (match === null) return undefined;
  let name = match[1]!.toLowerCase();
  if (name.startsWith('[')) name = name.slice(1, -1);
  else if (name.endsWith('.')) name = name.slice(0, -1);
  return { name, port: match[2] };
}

/** Whether `name` (already lower case) is a host name a browser cannot have been tricked into sending here. */
function expectedHostName(name: string, allowedHosts: readonly string[]): boolean {
  if (isIP(name) !== 0) return true;
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  for (const allowed of allowedHosts) {
    if (allowed === '*' || allowed === name) return true;
    if (allowed.startsWith('.') && (name === allowed.slice(1) || name.endsWith(allowed))) return true;
  }
  return false;
}

/** Methods that change nothing: their answers reach a page of another site only as CORS headers allow. */
const READ_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

const DEFAULT_PORTS: Readonly<Record<string, string>> = { 'http:': '80', 'https:': '443', 'ws:': '80', 'wss:': '443' };

/** The origin in its canonical form (lower case, default port dropped), or undefined when it is not a URL origin. */
export function canonicalOrigin(origin: string): string | undefined {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return undefined;
  }
  if (url.origin === 'null') return undefined;
  return url.origin;
}

/** What the policy reads of a request: its target, its Host and Origin headers, and its header lines as they came. */
export interface RequestHead {
  /** The request target as sent (node:http's `req.url`). */
  readonly url?: string;
  readonly headers: { readonly host?: string; readonly origin?: string };
  readonly rawHeaders: readonly string[];
}

/**
 * Why a request must be refused, or undefined when it may go on. `method` is its method, POST by default, as for a
 * WebSocket upgrade (a GET that opens a stream of every change: a write's worth of trust). A request with more than
 * one Host line is refused 400, as RFC 9112 (3.2) requires of a server: with two names a proxy in front and this node
 * could each take a different one, and the Host check below would judge only the first. An absolute-form target
 * (`GET http://name/v1/...`) names the host instead of the Host header (RFC 9112, 3.2.2): that name is the one judged.
 */
export function requestRefusal(request: RequestHead, policy: RequestPolicy, method = 'POST'): MercuryError | undefined {
  if (hostLines(request.rawHeaders) > 1) return new MercuryError('BAD_REQUEST', 'the request has more than one Host header; send exactly one');
  const target = parseRequestTarget(request.url ?? '/');
  if (target === undefined) return new MercuryError('BAD_REQUEST', `the request target "${request.url}" is not a usable http(s) URL: send the path alone (/v1/...) or http://host[:port]/path without user information`);
  const host = target.authority ?? request.headers.host;
  const { origin } = request.headers;
  if (host !== undefined) {
    const parsed = parseHost(host);
    if (parsed === undefined || !expectedHostName(parsed.name, policy.allowedHosts)) {
      const name = parsed?.name ?? host;
      return new MercuryError(
        'HOST_NOT_ALLOWED',
        `Host "${host}" is not a name this node answers to (a guard against DNS rebinding); use the node's address, or start the node with --allowed-hosts ${name}`,
      );
    }
  }
  if (origin === undefined || policy.allowedOrigins.includes('*') || READ_METHODS.has(method)) return undefined;
  const canonical = canonicalOrigin(origin);
  if (canonical !== undefined) {
    if (policy.allowedOrigins.includes(canonical)) return undefined;
    // Same origin: the page was served under the very name and port this request is sent to (which passed the Host check).
    const url = new URL(canonical);
    const parsedHost = host === undefined ? undefined : parseHost(host);
    const originPort = url.port === '' ? DEFAULT_PORTS[url.protocol] : url.port;
    const originName = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    if (parsedHost !== undefined && parsedHost.name === originName && (parsedHost.port ?? DEFAULT_PORTS[url.protocol]) === originPort) return undefined;
  }
  return new MercuryError(
    'ORIGIN_NOT_ALLOWED',
    `Origin "${origin}" is another site: a web page may use this node only from the node's own origin; to allow this one, start the node with --allowed-origins ${canonical ?? origin}`,
  );
}

/** Header lines named Host (any case). */
function hostLines(rawHeaders: readonly string[]): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') count++;
  }
  return count;
}
