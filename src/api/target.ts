/**
 * The request target of an HTTP/1.1 request line (RFC 9112, 3.2), split into what routing and the Host check need.
 *
 * - origin-form, `/v1/kv/a?x=1`: what every client sends to a server.
 * - absolute-form, `http://node:8080/v1/kv/a?x=1`: what a client sends to a forward proxy, and what a server MUST
 *   accept too (3.2.2); the server then takes the host from the target and ignores the Host header.
 * Anything else (asterisk-form `*`, authority-form) has no path of ours: its path is the target itself, which no route
 * matches (404).
 */

/** A request target's path and query (without the `?`), and the authority of an absolute-form target. */
export interface RequestTarget {
  readonly path: string;
  readonly query: string;
  /** `host[:port]` of an absolute-form target; undefined for origin-form. */
  readonly authority: string | undefined;
}

/** `http://` or `https://` (any case), then the authority up to the path, query or end. */
const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)/i;

/**
 * Splits `url` (node:http's `req.url`, the target as sent). An absolute-form target whose authority is empty or carries
 * user information (`user@host`, which RFC 9110 4.2.4 forbids in http URIs) gives undefined: the request is malformed.
 */
export function parseRequestTarget(url: string): RequestTarget | undefined {
  let authority: string | undefined;
  let rest = url;
  const absolute = ABSOLUTE_FORM.exec(url);
  if (absolute !== null) {
    authority = absolute[1]!;
    if (authority === '' || authority.includes('@')) return undefined;
    rest = url.slice(absolute[0].length);
    if (!rest.startsWith('/')) rest = `/${rest}`;
  }
  const queryAt = rest.indexOf('?');
  return queryAt === -1 ? { path: rest, query: '', authority } : { path: rest.slice(0, queryAt), query: rest.slice(queryAt + 1), authority };
}
