/**
 * The request's principal, as the API handler authenticated it (api.ts), for the routes to check scopes against
 * (src/auth/scopes.ts). Undefined when the node runs with auth off.
 */
import type { IncomingMessage } from 'node:http';
import type { Principal } from '../auth/index.js';
import type { Txn } from '../api/index.js';
import type { WriteCaller } from './node-api.js';

const principals = new WeakMap<IncomingMessage, Principal>();

export function setPrincipal(req: IncomingMessage, principal: Principal | undefined): void {
  if (principal !== undefined) principals.set(req, principal);
}

export function principalOf(req: IncomingMessage): Principal | undefined {
  return principals.get(req);
}

/**
 * Who a write is made for: the principal's name becomes the entry's author, and a replica forwards the caller's own
 * Authorization header to its upstream, which checks it again.
 *
 * This is the one place where the author of a write is decided: the node puts `caller.author` into the commit
 * request's `author` (src/node/node.ts), which the entry records beside the ops (log/entry.ts).
 */
export function writeFor(req: IncomingMessage, request: Txn): { request: Txn; caller: WriteCaller } {
  const principal = principalOf(req);
  const authorization = req.headers.authorization;
  return { request, caller: { author: principal?.name, authorization } };
}
