/**
 * Readiness (`/readyz`): whether a node should take traffic, as a pure function of what the node knows, so that each
 * rule is tested without making a store fail or a replica fall behind. Each reason starts with a stable code.
 */
import { namesKey } from '../store/index.js';

export interface ReadinessInput {
  /** Times damaged data was met, and what the first was ("key \"a/b\"", "log entry 17", "head record"). */
  readonly damageCount: number;
  readonly firstDamage: string | undefined;
  /** The storage failure of the last write while writes still fail (STORAGE_FULL, STORAGE_IO_ERROR). */
  readonly writeFault: { readonly code: string; readonly message: string } | undefined;
  /**
   * The storage failure that paused a replica's replication, until an install, an apply or the record of a divergence
   * goes through, or replication halts on damaged data (nothing is retried then; `halted` says why).
   */
  readonly replicationPause: { readonly code: string; readonly message: string } | undefined;
  /** A replica's phase (`streaming` once joined); undefined on the root. */
  readonly replicationPhase: string | undefined;
  /** How far behind the root's clock the replica is (undefined: unknown, or the root). */
  readonly lagMs: number | undefined;
  /** `--ready-max-lag-ms`. */
  readonly lagMsMax: number;
}

export function readiness(input: ReadinessInput): { ready: boolean; reasons: string[] } {
  const reasons: string[] = [];
  // /readyz takes no token: a damaged key is not named (its name, or a token record's id, is not every caller's to
  // know; an admin token's status names it). Records of the store's own (a log entry, the head record) are.
  const first = input.firstDamage === undefined || namesKey(input.firstDamage) ? 'GET /v1/status with an admin token says where' : `first: ${input.firstDamage}`;
  if (input.damageCount > 0) reasons.push(`DATA_CORRUPTED: damaged data met ${input.damageCount} times; ${first}`);
  if (input.writeFault !== undefined) reasons.push(`${input.writeFault.code}: ${input.writeFault.message}`);
  else if (input.replicationPause !== undefined) reasons.push(`${input.replicationPause.code}: replication paused, retried every second: ${input.replicationPause.message}`);
  const phase = input.replicationPhase;
  if (phase === 'halted') reasons.push('NOT_JOINED: replication halted on damaged data in this node\'s store; resync it (mercury resync) or restore its data directory');
  else if (phase !== undefined && phase !== 'streaming') reasons.push(`NOT_JOINED: the replica is ${phase}, not streaming from an upstream`);
  // Only a joined replica lags: one that is not streaming is NOT_JOINED already, whatever its last lag was.
  if (phase === 'streaming' && input.lagMs !== undefined && input.lagMs > input.lagMsMax)
    reasons.push(`LAGGING: the replica is ${input.lagMs} ms behind the root, more than --ready-max-lag-ms ${input.lagMsMax}; it is catching up`);
  return { ready: reasons.length === 0, reasons };
}
