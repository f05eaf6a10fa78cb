/**
 * The request's principal, as the API handler authenticated it from the headers (api.ts), for the routes to check
 * scopes against (src/auth/scopes.ts). Undefined when the node runs with auth off.
 *
 * Order on the request path: Host and Origin, then the credential (401), then the scope a route can tell from the
 * method and URL alone (403), and only then the body (http-io.ts readBody, which asserts that this order held). A
 * body refused before it was read is dropped unread and never charged to the in-flight body budget, so a client
 * without a credential cannot take that budget from anyone (http-io.ts `dropUnreadBody`).
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Principal } from '../auth/index.js';
import type { Txn } from '../api/index.js';
import type { NodeApi, WriteCaller } from './node-api.js';

/**
 * Who a request is, set once its credential (or auth off) let it through: only such a request may have its body read.
 * A symbol-keyed property of the request rather than a WeakMap and a WeakSet: every request passes here, and the
 * ephemeron tables cost about 0.6 µs per request more (measured by profile, 2026-12-02).
 */
const ADMITTED = Symbol('mercury.admitted');
type AdmittedRequest = IncomingMessage & { [ADMITTED]?: Principal | null };

/** Records who `req` is, once its credential (or auth off) let it through. */
export function admit(req: IncomingMessage, principal: Principal | undefined): void {
  (req as AdmittedRequest)[ADMITTED] = principal ?? null;
}

/** A body is read only after its request was authenticated from the headers: a bug otherwise. */
export function assertAdmitted(req: IncomingMessage): void {
  assert.ok((req as AdmittedRequest)[ADMITTED] !== undefined, `${req.method} ${req.url}: a request body was read before the request was authenticated`);
}

export function principalOf(req: IncomingMessage): Principal | undefined {
  return (req as AdmittedRequest)[ADMITTED] ?? undefined;
}

/**
 * The request's principal as its token is now, and the request admitted as that: the token may have been revoked, or
 * its scopes narrowed, while the body arrived (up to the request timeout) or while a read waited for `minSeq`. Throws
 * UNAUTHENTICATED once revoked. A route checks its scopes again with this after every such wait, before it writes or
 * answers (the wire port checks each request the same way).
 */
export function principalNow(req: IncomingMessage, node: Pick<NodeApi, 'currentPrincipal'>): Principal | undefined {
  const principal = node.currentPrincipal(principalOf(req));
  admit(req, principal);
  return principal;
}

/**
 * Who a write is made for: the principal's name becomes the entry's author, and a replica forwards the caller's own
 * Authorization header to its upstream, which checks it again.
 *
 * This is the one place where the author of a write is decided: the node puts `caller.author` into the commit
 * request's `author` (src/node/node.ts), which the entry records beside the ops (log/entry.ts). `res` is the write's
 * answer: the caller is gone once it closed (`WriteCaller.gone`).
 */
export function writeFor(req: IncomingMessage, res: ServerResponse, request: Txn): { request: Txn; caller: WriteCaller } {
  const principal = principalOf(req);
  const authorization = req.headers.authorization;
  return { request, caller: { author: principal?.name, authorization, gone: () => closedSignal(res) } };
}

/** A signal that aborts when `res` closes (its client left, or it was answered), at once if it already has. */
function closedSignal(res: ServerResponse): AbortSignal {
  if (res.closed) return AbortSignal.abort();
  const closed = new AbortController();
  res.once('close', () => closed.abort());
  return closed.signal;
}
