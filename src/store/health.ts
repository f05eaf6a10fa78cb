/**
 * What the store has found wrong with its own storage while serving: damaged records (a log entry that fails its
 * chain check, a key record that fails its checksum) and failed writes (disk full, I/O errors). Only the request,
 * watch or child session that met a fault fails; the node goes on serving what is sound, and this record makes the
 * fault visible: logged and counted by the node, shown in `/v1/status`, and failing `/readyz`.
 */
import { ChainError, EntryDecodeError } from '../log/index.js';
import { MercuryError } from '../errors/index.js';

/** Distinct damage reports kept for status; later ones are counted, not kept. */
export const DAMAGE_REPORTS_MAX = 16;

export interface DamageReport {
  /** What was damaged: "log entry 17", "key \"a/b\"", ... */
  readonly what: string;
  readonly message: string;
}

/** Throws-ready error for a record that failed its check on read. Status 500, code DATA_CORRUPTED. */
export function dataCorrupted(what: string, cause: unknown): MercuryError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new MercuryError('DATA_CORRUPTED', `damaged data on this node: ${what}: ${detail}; read from another node, and see "Damaged data" in the README`, {
    cause,
    details: { damaged: what },
  });
}

/** True for the errors a stored entry record raises when its bytes are not what was written. */
export function isRecordDamage(error: unknown): boolean {
  return error instanceof ChainError || error instanceof EntryDecodeError;
}
