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
  /**
   * Answer bytes queued on all connections together (not yet taken by the kernel). Each connection may hold its share
   * (`outputBytesTotalMax / connectionsMax`) whatever the others hold; beyond it, a read whose answer would take the
   * port past this waits, with every request after it, until the connection's client takes its answers, or is answered
   * OVERLOADED (reason WIRE_OUTPUT_FULL) within a sweep if the connection has none on their way. Without it, 128
   * connections that pipelined GETs of a 1 MiB value and read nothing made a node hold 8 MiB of answers each: about
   * 1 GiB for 124 KB sent (audit, 2026-12-07; docs/decisions.md, record 75).
   */
  readonly outputBytesTotalMax: number;
  /**
   * Answer bytes the connections of one remote host (an IPv4 address, an IPv6 /64) may hold together beyond which
   * those past their share hold no more, as past `outputBytesTotalMax` (record 81): a quarter of the port's budget, as
   * a host has a quarter of its connections. Without it, one address's 32 connections that pipelined GETs of a 1 MiB
   * value and read nothing held the port's whole budget, and every other client's GET of a 1 MiB value was refused
   * OVERLOADED (audit, 2026-12-07).
   */
  readonly outputBytesPerAddressMax: number;
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
  outputBytesTotalMax: 64 * MiB,
  outputBytesPerAddressMax: 16 * MiB,
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
  outputBytesTotalMax: 4 * MiB,
  outputBytesPerAddressMax: 1 * MiB,
  sweepIntervalMs: 50,
});

/**
 * Answer bytes one connection may hold without looking at what the port holds: its even share of the port's budget. So
 * the port holds at most `outputBytesTotalMax` plus a share per connection, whatever its clients read.
 */
export function wireOutputShareBytes(limits: WireLimits): number {
  return Math.floor(limits.outputBytesTotalMax / limits.connectionsMax);
}

export function validateWireLimits(limits: WireLimits): void {
  for (const [name, value] of Object.entries(limits)) assert.ok(Number.isSafeInteger(value) && (value as number) > 0, `wire limit ${name} must be a positive integer`);
  assert.ok(limits.connectionsPerAddressMax <= limits.connectionsMax, 'a per-address cap within the total');
  // One connection that reads slowly may still fill its own bound while the others are idle.
  assert.ok(limits.outputBytesMax <= limits.outputBytesPerAddressMax, "a connection's output bound fits its host's part of the port's");
  assert.ok(limits.outputBytesPerAddressMax <= limits.outputBytesTotalMax, "a host's part of the output budget fits the port's");
  // A share holds a good many small answers and ERRORs, whatever the others hold: reads of small values are always
  // served. And a connection past its share has more queued than a socket's high-water mark (16 KiB): a 'drain' comes
  // to read the reads that wait for room.
  assert.ok(wireOutputShareBytes(limits) >= 64 * 1024, 'each connection has a share of the output budget beyond the socket high-water mark');
  // The sweep enforces the timeouts: it must run several times within the shortest, or a timeout is late by a sweep.
  assert.ok(limits.sweepIntervalMs * 4 <= Math.min(limits.helloTimeoutMs, limits.frameTimeoutMs), 'the sweep runs several times within each timeout');
  assert.ok(limits.frameTimeoutMs <= limits.idleTimeoutMs, 'a partial frame times out before an idle connection would');
}
