/**
 * Write forwarding on a replica: a replica's dataset is read-only, so a write it receives goes to its upstream's HTTP
 * API as a JSON transaction (and from there, hop by hop, to the root), sent by the client's own HTTP code. The answer
 * names the seq that carries the write; the replica answers its client only once it has applied that seq itself,
 * which gives read-your-writes on any node.
 *
 * Errors: a Mercury error the upstream answers is passed on with its code (a value too large, a compare that failed,
 * an overloaded root). Everything else is UPSTREAM_UNAVAILABLE, whose message says whether the write may have been
 * applied: only a write that never left this node is certainly not.
 */
import { ErrorCode, MercuryError, formatTxn } from '../api/index.js';
import { NodeClient, ServerError, UnavailableError, type ClientTls } from '../client/index.js';
import type { WriteRequest, WriteResult } from '../commit/index.js';

export const FORWARD_TIMEOUT_MS = 30_000;

const MAYBE_APPLIED = 'it may or may not have been applied: read before retrying a non-idempotent write';

/**
 * `tls`: the node's CA and certificate, for an upstream that serves https (pass the same object while it holds: one
 * agent each). `authorization` is the caller's own Authorization header: the upstream (and in the end the root) checks
 * the caller's token itself, so a replica never writes with more rights than its caller. `gone` aborts when the
 * caller left: the forward ends then (UPSTREAM_UNAVAILABLE, that nobody reads), and with it its connection and its
 * place among the replica's forwarded writes.
 */
export async function forwardWrite(
  upstreamHttpUrl: string | undefined,
  request: WriteRequest,
  timeoutMs = FORWARD_TIMEOUT_MS,
  tls?: ClientTls,
  authorization?: string,
  gone?: AbortSignal,
): Promise<WriteResult> {
  if (upstreamHttpUrl === undefined)
    throw new MercuryError('UPSTREAM_UNAVAILABLE', 'this replica is not connected to an upstream, so it cannot forward the write; retry, or write to the root');
  // The client checks the answer's shape (src/client/answers.ts): one without "succeeded" and "seq" is an
  // InvalidAnswerError, an UnavailableError sent, so UPSTREAM_UNAVAILABLE saying the write may have been applied.
  try {
    const { succeeded, seq, hash } = await new NodeClient(upstreamHttpUrl, timeoutMs, tls, authorization, gone).txn(formatTxn(request));
    return hash === undefined ? { succeeded, seq } : { succeeded, seq, hash: Buffer.from(hash, 'hex') };
  } catch (error) {
    throw forwardError(upstreamHttpUrl, error);
  }
}

function forwardError(url: string, error: unknown): MercuryError {
  if (error instanceof UnavailableError) {
    const outcome = error.requestSent ? MAYBE_APPLIED : 'it never reached the upstream, so it was not applied: retry';
    return new MercuryError('UPSTREAM_UNAVAILABLE', `forwarding the write to ${url} failed (${error.message}); ${outcome}`, { cause: error });
  }
  if (error instanceof ServerError) {
    // A code this node does not know (UnknownCodeError: a newer root's) is not one it can answer with; a body that is
    // not a Mercury error arrived above, as InvalidAnswerError.
    const { code: _code, message: _message, ...details } = error.details ?? {};
    if (Object.hasOwn(ErrorCode, error.code)) return new MercuryError(error.code, error.message, { cause: error, details });
    return new MercuryError('UPSTREAM_UNAVAILABLE', `upstream ${url} answered HTTP ${error.status} with code ${error.code} (${error.message}); ${MAYBE_APPLIED}`, { cause: error });
  }
  return new MercuryError('UPSTREAM_UNAVAILABLE', `upstream ${url} answered something that is not a transaction result (${(error as Error).message}); ${MAYBE_APPLIED}`, {
    cause: error,
  });
}
