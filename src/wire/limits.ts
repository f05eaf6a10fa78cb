/**
 * Limits of the wire port (src/api/wire.ts): connections, timeouts and the per-connection bounds that keep one client
 * from holding memory without limit. A section of the node's limits (src/node/limits.ts), which asserts how they
 * relate to the HTTP port's and to the open-files budget.
 */
import assert from 'node:assert/strict';

const MiB = 1024 * 1024;

export interface WireLimits {
  /**
   * Open wire connections. Each multiplexes a client process's requests, so a host needs one or a few, not one per
   * request in flight; the budget comes out of the files reserved beside HTTP (src/limits.ts).
   */
  readonly connectionsMax: number;
  /** Open wire connections one remote address may hold. */
  readonly connectionsPerAddressMax: number;
  /** A connection must complete its TLS handshake and HELLO within this long, or it is closed. */
  readonly helloTimeoutMs: number;
  /** A frame that has started to arrive must be complete within this long (slowloris), else REQUEST_TIMEOUT and close. */
  readonly frameTimeoutMs: number;
  /** A connection with nothing in flight and nothing arriving for this long is closed with GOAWAY. */
  readonly idleTimeoutMs: number;
  /**
   * Requests one connection may have in flight (read, not yet answered). At the limit the node stops reading the
   * socket until answers go out: TCP then pushes back on the client. READY tells the client, which queues locally.
   */
  readonly inFlightPerConnectionMax: number;
  /**
   * Answer bytes queued on one connection (not yet taken by the kernel) beyond which the node stops reading its
   * requests: a client that does not read its answers cannot make the node hold more than this plus one answer.
   */
  readonly outputBytesMax: number;
  /** Checks of the timeouts above run this often. */
  readonly sweepIntervalMs: number;
}

export const WIRE_LIMITS: WireLimits = Object.freeze({
  connectionsMax: 128,
  connectionsPerAddressMax: 32,
  helloTimeoutMs: 5_000,
  frameTimeoutMs: 30_000,
  idleTimeoutMs: 300_000,
  inFlightPerConnectionMax: 1_024,
  outputBytesMax: 8 * MiB,
  sweepIntervalMs: 1_000,
});

export const WIRE_LIMITS_TEST: WireLimits = Object.freeze({
  connectionsMax: 64,
  connectionsPerAddressMax: 16,
  helloTimeoutMs: 500,
  frameTimeoutMs: 500,
  idleTimeoutMs: 2_000,
  inFlightPerConnectionMax: 16,
  outputBytesMax: 64 * 1024,
  sweepIntervalMs: 50,
});

export function validateWireLimits(limits: WireLimits): void {
  for (const [name, value] of Object.entries(limits)) assert.ok(Number.isSafeInteger(value) && (value as number) > 0, `wire limit ${name} must be a positive integer`);
  assert.ok(limits.connectionsPerAddressMax <= limits.connectionsMax, 'a per-address cap within the total');
  // The sweep enforces the timeouts: it must run several times within the shortest, or a timeout is late by a sweep.
  assert.ok(limits.sweepIntervalMs * 4 <= Math.min(limits.helloTimeoutMs, limits.frameTimeoutMs), 'the sweep runs several times within each timeout');
  assert.ok(limits.frameTimeoutMs <= limits.idleTimeoutMs, 'a partial frame times out before an idle connection would');
}
