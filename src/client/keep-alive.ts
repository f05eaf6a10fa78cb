/**
 * Keep-alive connections that are not reused once the node may have closed them, and what a request that fails on a
 * reused connection anyway may do (docs/decisions.md, record 27).
 *
 * A node closes a connection that stayed idle for its keep-alive timeout (node:http's `keepAliveTimeout`) and says so
 * in every answer: `Keep-Alive: timeout=N` (seconds). Node 20's Agent reads that hint but applies it only when the
 * agent has a `timeout` of its own that is longer; without one (our case) it keeps idle sockets for ever, and a
 * request sent on one just as the node closes it fails with ECONNRESET. The agents here retire an idle socket
 * `KEEP_ALIVE_MARGIN_MS` before the node's advertised timeout (`KEEP_ALIVE_IDLE_MS_DEFAULT` when it advertises none),
 * and `connectionClosed` lets the caller refuse, before writing a byte, a pooled socket whose retirement timer is late
 * (a busy event loop runs timers late) or which the node already closed.
 *
 * Over HTTP/1.1 a request is known never to have reached the node only when not one of its bytes was written: a
 * node can read a request and fail just before answering, which looks the same on the wire as a node that closed
 * the connection before the request came. So the rule for a request that failed on a reused connection before any
 * byte of its answer arrived is: a read is sent again on a fresh connection; a write is sent again only when it was
 * never written, because the socket had ended or been destroyed (a FIN or reset seen, or retired) before its first
 * byte. To see a FIN that is already in the kernel but not yet delivered to JavaScript, a write on a reused socket
 * waits for the next poll of the event loop before it is written (`afterNextPoll`).
 */
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { systemClock } from '../clock/index.js';
import { KEEP_ALIVE_HINT_SECONDS_MAX, KEEP_ALIVE_IDLE_MS_DEFAULT, KEEP_ALIVE_MARGIN_MS } from './limits.js';

/** Requests of this process sent once more on a fresh connection after a pooled one failed, by kind (tests read them). */
export const freshConnectionResends = { reads: 0, unwritten: 0 };

/** The idle timeout a node advertised on each socket (ms), from the last answer read on it. */
const advertisedIdleMs = new WeakMap<Duplex, number>();
/** When each pooled socket is retired (monotonic ms). */
const retireAtMs = new WeakMap<Duplex, number>();

/**
 * The idle timeout in `Keep-Alive: timeout=N[, max=M]` (RFC 9112 leaves its syntax to RFC 2068: a list of
 * name=value), in ms; undefined when there is none or it is not a whole number of seconds. Capped at
 * KEEP_ALIVE_HINT_SECONDS_MAX, so that a wild value cannot keep a socket for days.
 */
export function keepAliveTimeoutMs(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined) return undefined;
  const match = /(?:^|,)\s*timeout\s*=\s*(\d{1,9})\s*(?:,|$)/i.exec(value);
  if (match === null) return undefined;
  return Math.min(Number(match[1]), KEEP_ALIVE_HINT_SECONDS_MAX) * 1000;
}

/** How long a socket may stay idle in the pool given what the node advertised; 0: do not keep it. */
export function idleBudgetMs(advertisedMs: number | undefined): number {
  if (advertisedMs === undefined) return KEEP_ALIVE_IDLE_MS_DEFAULT;
  return Math.max(0, advertisedMs - KEEP_ALIVE_MARGIN_MS);
}

/** Records the idle timeout the node advertised in this answer, for when its socket goes back to the pool. */
export function noteKeepAlive(response: http.IncomingMessage): void {
  const advertised = keepAliveTimeoutMs(response.headers['keep-alive']);
  if (advertised === undefined) advertisedIdleMs.delete(response.socket);
  else advertisedIdleMs.set(response.socket, advertised);
}

/** Called by the Agent when a socket could go back to the pool: keep it only for its idle budget. */
function retireWhenIdle(socket: Duplex, agentKeeps: boolean): boolean {
  const budgetMs = idleBudgetMs(advertisedIdleMs.get(socket));
  if (!agentKeeps || budgetMs === 0) return false;
  // The Agent destroys a pooled socket on 'timeout'; the timer restarts with the socket's next activity.
  (socket as Socket).setTimeout(budgetMs);
  retireAtMs.set(socket, systemClock.monotonicMs() + budgetMs);
  return true;
}

/** Called by the Agent when a pooled socket is handed to a request: the request's own timeout applies from now on. */
function takeFromPool(socket: Duplex): void {
  (socket as Socket).setTimeout(0);
}

/**
 * True when a socket handed out by the pool must not carry a request: it was destroyed, the node ended it (a FIN
 * already delivered), or its retirement time passed while the timer that retires it had not yet run.
 */
export function connectionClosed(socket: Socket): boolean {
  if (socket.destroyed || !socket.writable || socket.readableEnded) return true;
  const retireAt = retireAtMs.get(socket);
  return retireAt !== undefined && systemClock.monotonicMs() >= retireAt;
}

/**
 * Runs `fn` after the event loop has polled for I/O at least once since this call. From the poll phase a single
 * setImmediate runs right after the current poll, before any new one; the second one runs after the next.
 */
export function afterNextPoll(fn: () => void): void {
  setImmediate(() => setImmediate(fn));
}

/**
 * The Agent's keepSocketAlive returns whether to pool the socket (documented; @types/node 20 declares void). It also
 * sets TCP keep-alive, unrefs the socket and applies the `Keep-Alive` hint its own way, which retireWhenIdle replaces.
 */
type KeepSocketAlive = (socket: Duplex) => boolean;
// A mixin's base must be typed with a rest parameter of any[] (TypeScript's rule for mixin classes).
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AgentClass = new (...args: any[]) => http.Agent;

/** An Agent class whose idle sockets are retired before the node closes them. */
function retiringIdleSockets<Base extends AgentClass>(Agent: Base): Base {
  return class extends Agent {
    override keepSocketAlive(socket: Duplex): boolean {
      return retireWhenIdle(socket, (super.keepSocketAlive as KeepSocketAlive).call(this, socket));
    }

    override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
      super.reuseSocket(socket, request);
      takeFromPool(socket);
    }
  };
}

/** node:http's and node:https's Agents with idle sockets retired before the node closes them. */
export const KeepAliveHttpAgent = retiringIdleSockets(http.Agent);
export const KeepAliveHttpsAgent = retiringIdleSockets(https.Agent);
