/**
 * Write forwarding on a replica: a replica's dataset is read-only, so a write it receives goes to its upstream's HTTP
 * API as a JSON transaction (and from there, hop by hop, to the root), sent by the client's own HTTP code. The answer
 * names the seq that carries the write; the replica answers its client only once it has applied that seq itself,
 * which gives read-your-writes on any node.
 *
 * Errors: a Mercury error the upstream answers is passed on with its code (a value too large, a compare that failed,
 * an overloaded root). Everything else is UPSTREAM_UNAVAILABLE, whose message says whether the write may have been
 * applied: only a write that never left this node is certainly not.
 *
 * An upstream that vanished (no FIN, no RST) answers nothing, and a forward would wait its whole FORWARD_TIMEOUT_MS.
 * The replica's replication finds such an upstream stale sooner (`upstreamStaleMs` and a hop: 11 s at depth 1 in
 * production): `ForwardsInFlight` then ends every forward sent to that upstream's URL, and refuses new ones to it until
 * an upstream welcomes the replica again (docs/decisions.md, record 86).
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
 * place among the replica's forwarded writes. It aborts with an UpstreamSilent reason when replication dropped the
 * upstream (`ForwardsInFlight`): the UPSTREAM_UNAVAILABLE then says so, and whether the write may have been applied.
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
    throw forwardError(upstreamHttpUrl, error, gone?.reason);
  }
}

/** `ended`: why `gone` aborted, if it did (UpstreamSilent: replication found the upstream stale). */
function forwardError(url: string, error: unknown, ended: unknown): MercuryError {
  if (error instanceof UnavailableError) {
    // The same promise as any other forward without an answer: only one never sent is known not to be applied.
    const outcome = error.requestSent ? MAYBE_APPLIED : 'it never reached the upstream, so it was not applied: retry';
    if (ended instanceof UpstreamSilent)
      return new MercuryError('UPSTREAM_UNAVAILABLE', `forwarding the write to ${url} was given up: ${ended.message}; ${outcome}`, { cause: error });
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

/** Why a forward was ended before its answer: the replica's replication dropped the upstream it went to as stale. */
export class UpstreamSilent extends Error {
  constructor(reason: string) {
    super(`the upstream stopped answering this replica's replication (${reason})`);
    this.name = 'UpstreamSilent';
  }
}

/** One forward in flight: where it went, and what ends it (its caller leaving, or its upstream found silent). */
export interface Forward {
  readonly target: string | undefined;
  readonly ends: AbortController;
}

/**
 * A replica's forwarded writes not yet answered, each with the URL it went to (their count is what
 * `forwardedWritesMax` bounds), and the upstream its replication last found silent. Replication judges an upstream
 * alive by what comes on its replication connection; a forward travels on another, to the same node's HTTP API, that
 * sees nothing until an answer or its timeout. So replication's verdict is passed on: a vanished upstream costs a
 * forward the stale time, not FORWARD_TIMEOUT_MS (record 86).
 */
export class ForwardsInFlight {
  private readonly forwards = new Set<Forward>();
  /** The upstream last dropped as stale, and how many welcomes the replica had had then (see `refusal`). */
  private silent: { readonly url: string; readonly reason: string; readonly welcomes: number } | undefined;
  /** Forwards ended because their upstream was found silent, since start (a counter). */
  endedSilent = 0;

  get size(): number {
    return this.forwards.size;
  }

  begin(target: string | undefined): Forward {
    const forward = { target, ends: new AbortController() };
    this.forwards.add(forward);
    return forward;
  }

  /** Answered, or failed: the forward no longer holds a place. */
  done(forward: Forward): void {
    this.forwards.delete(forward);
  }

  /**
   * Replication dropped the upstream whose HTTP API is `url` as stale, after `welcomes` welcomes since start
   * (DownstreamStatus.upstreamSwitches). The forwards sent there end now with UPSTREAM_UNAVAILABLE: whether the write
   * was applied is as unknown as at the timeout, and the message says so (`forwardError`). A forward to another URL
   * (`--root-url` naming another node than the upstream) is left to its own timeout: nothing was learned about it.
   * Returns how many it ended.
   */
  upstreamSilent(url: string, reason: string, welcomes: number): number {
    this.silent = { url, reason, welcomes };
    let ended = 0;
    for (const forward of this.forwards) {
      if (forward.target !== url) continue;
      this.forwards.delete(forward);
      ended++;
      forward.ends.abort(new UpstreamSilent(reason));
    }
    this.endedSilent += ended;
    return ended;
  }

  /**
   * The refusal of a new forward to `target` while it is the upstream last found silent and no upstream has welcomed
   * the replica since (`welcomes` unchanged): it would wait FORWARD_TIMEOUT_MS for a node nothing has heard from. Only a
   * `--root-url` or a recorded root URL can get here: the upstream's own URL is unknown between sessions (forwardWrite
   * refuses at once then). Any welcome ends it, even from another upstream: the replica has an upstream again.
   */
  refusal(target: string | undefined, welcomes: number): MercuryError | undefined {
    const silent = this.silent;
    if (silent === undefined) return undefined;
    if (welcomes !== silent.welcomes) {
      this.silent = undefined;
      return undefined;
    }
    if (target !== silent.url) return undefined;
    return new MercuryError(
      'UPSTREAM_UNAVAILABLE',
      `the upstream ${silent.url} stopped answering this replica's replication (${silent.reason}) and no upstream has taken the replica since, so the write was not forwarded nor applied: retry shortly, or write to another node`,
    );
  }
}
