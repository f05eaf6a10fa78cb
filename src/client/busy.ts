/**
 * Waiting out a node that refuses for now, for a call that this one node must answer (a snapshot of it: `mercury
 * snapshot save`), where `MercuryClient`'s retries across nodes do not apply. A 503 whose code says the node will take
 * the call later is tried again after the node's Retry-After (each wait bounded, limits.ts), until `waitMs` has passed
 * since the first attempt; then the call fails with `BusyTimeoutError`, which keeps the node's code. Every other error
 * is thrown at once: waiting would not change a 4xx, and a node that cannot be reached is the caller's to judge.
 *
 * Retried: every 503 but `SHUTTING_DOWN` (`OVERLOADED`: its snapshot readers or LMDB's reader table are all in use;
 * `UPSTREAM_UNAVAILABLE`: a replica that has not joined yet; ...). A node that is shutting down would answer the next
 * attempt with a refused connection, so waiting on it only delays the error.
 */
import { sleep, systemClock, type Clock } from '../clock/index.js';
import { NodeUnavailableError, ServerError } from './errors.js';
import { BUSY_RETRY_DELAY_MS_DEFAULT, BUSY_RETRY_DELAY_MS_MAX, BUSY_RETRY_DELAY_MS_MIN, BUSY_WAIT_MS_DEFAULT } from './limits.js';

/** One wait before the next attempt, as `onWait` is told of it. */
export interface BusyWait {
  /** The refusal being waited out. */
  readonly error: NodeUnavailableError;
  /** How long this wait lasts. */
  readonly delayMs: number;
  /** How long the call has been going on, the attempts before included. */
  readonly waitedMs: number;
  /** How much of `waitMs` is left after this wait. */
  readonly leftMs: number;
  /** Attempts made so far (1 after the first refusal). */
  readonly attempts: number;
}

export interface BusyWaitOptions {
  /** How long the call may go on, from its first attempt (default BUSY_WAIT_MS_DEFAULT; 0: one attempt). */
  readonly waitMs?: number;
  /** Told of every wait before it begins (a CLI prints what it waits for). */
  readonly onWait?: (wait: BusyWait) => void;
  readonly clock?: Clock;
}

/** The call was refused for now until its wait ran out: `code`, `status` and `details` are the last refusal's. */
export class BusyTimeoutError extends ServerError {
  override readonly name = 'BusyTimeoutError';
  constructor(
    message: string,
    readonly last: NodeUnavailableError,
    readonly attempts: number,
    readonly waitedMs: number,
  ) {
    super(last.code, message, { status: last.status, details: last.details, cause: last, retryAfterMs: last.retryAfterMs });
  }
}

/** Whether `error` is a refusal that the node may lift by itself (see the header). */
export function isBusy(error: unknown): error is NodeUnavailableError {
  return error instanceof NodeUnavailableError && error.code !== 'SHUTTING_DOWN';
}

/** The wait before the next attempt: the node's Retry-After, bounded, and never past the end of the whole wait. */
function nextDelayMs(error: ServerError, leftMs: number): number {
  const askedMs = Math.min(Math.max(error.retryAfterMs ?? BUSY_RETRY_DELAY_MS_DEFAULT, BUSY_RETRY_DELAY_MS_MIN), BUSY_RETRY_DELAY_MS_MAX);
  return Math.min(askedMs, leftMs);
}

/** Runs `attempt` until it succeeds, fails otherwise than busy, or the wait runs out (BusyTimeoutError). */
export async function retryWhileBusy<T>(what: string, attempt: () => Promise<T>, options: BusyWaitOptions = {}): Promise<T> {
  const clock = options.clock ?? systemClock;
  const waitMs = options.waitMs ?? BUSY_WAIT_MS_DEFAULT;
  const startedMs = clock.monotonicMs();
  for (let attempts = 1; ; attempts++) {
    try {
      return await attempt();
    } catch (error) {
      if (!isBusy(error)) throw error;
      const waitedMs = clock.monotonicMs() - startedMs;
      const leftMs = waitMs - waitedMs;
      if (leftMs <= 0)
        throw new BusyTimeoutError(`${what}: still refused after ${attempts} ${attempts === 1 ? 'attempt' : 'attempts'} in ${Math.round(waitedMs)} ms: ${error.message}`, error, attempts, waitedMs);
      const delayMs = nextDelayMs(error, leftMs);
      options.onWait?.({ error, delayMs, waitedMs, leftMs: leftMs - delayMs, attempts });
      // Kept alive: nothing else holds the event loop of a command that waits here.
      await sleep(clock, delayMs, { keepAlive: true });
    }
  }
}
