/**
 * Where `mercury sync` resumes: a small JSON file in DIR, written atomically after each complete entry (and by a first
 * sync at seq 0, before it writes any file: DIR then always holds a state once it holds files).
 *
 *   DIR/.mercury-sync-state.json = {"format":1,"prefixBase64":string,"datasetId":string,"seq":number,"hash":string}
 *
 * `seq`: every change up to it is in DIR, so a restarted sync watches from seq + 1 (an entry applied again after a
 * crash between its files and this file is harmless: puts and deletes are idempotent). `datasetId` and the prefix
 * say what DIR mirrors: another prefix is refused; another dataset (a root rebuilt from nothing), or a seq past the
 * node's head (a damaged file, a root restored from an older backup), empties DIR and starts again (sync.ts). `hash`
 * (optional: absent from files written before decision 45, or when the node sent none) is the hash of entry `seq` as
 * 64 lowercase hex digits; the watch resumes with it as `afterHash`, so that a node whose chain has another entry
 * there (a root restored from an older backup and written past `seq` since) resets DIR with its state. The file
 * is read bounded and must be a regular file: a link there is refused (SYMLINK_REFUSED), a FIFO is not waited on.
 */
import { lstatSync } from 'node:fs';
import { join } from 'node:path';
import { isWatchHash } from '../api/index.js';
import { MercuryError } from '../errors/index.js';
import { readFileBounded } from '../fs/bounded-read.js';
import { symlinkRefused, writeFileAtomic } from './files.js';
import { SYNC_RESERVED_PREFIX } from './paths.js';

export const SYNC_STATE_FILE = `${SYNC_RESERVED_PREFIX}-state.json`;
const SYNC_STATE_FORMAT = 1;
/** The file holds at most about 1.5 KB (its largest part is a prefix of KEY_BYTES_MAX in base64). */
const SYNC_STATE_BYTES_MAX = 64 * 1024;

export interface SyncState {
  readonly prefix: Buffer;
  readonly datasetId: string;
  readonly seq: number;
  /** The hash of entry `seq` (hex), when known. */
  readonly hash: string | undefined;
}

/** The state in `dir`, or undefined when there is none (a first sync). A damaged file is refused, naming it. */
export function readSyncState(dir: string): SyncState | undefined {
  const path = join(dir, SYNC_STATE_FILE);
  const entry = lstatSync(path, { throwIfNoEntry: false });
  if (entry === undefined) return undefined;
  if (entry.isSymbolicLink()) throw symlinkRefused(dir, path, 'read its state');
  // Bounded, and never blocking on a FIFO planted there; O_NOFOLLOW: a link swapped in since the lstat fails.
  const text = readFileBounded(path, { what: 'sync state file', bytesMax: SYNC_STATE_BYTES_MAX, noFollow: true, code: 'INVALID_ARGUMENT', remedy: `remove it (and the files in ${dir}) to sync from scratch` }).toString('utf8');
  let parsed: { format?: unknown; prefixBase64?: unknown; datasetId?: unknown; seq?: unknown; hash?: unknown };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    parsed = {};
  }
  if (
    parsed.format !== SYNC_STATE_FORMAT ||
    typeof parsed.prefixBase64 !== 'string' ||
    typeof parsed.datasetId !== 'string' ||
    !Number.isSafeInteger(parsed.seq) ||
    (parsed.seq as number) < 0 ||
    (parsed.hash !== undefined && !isWatchHash(parsed.hash))
  )
    throw new MercuryError('INVALID_ARGUMENT', `${path} is not a sync state file of this Mercury; remove it (and the files in ${dir}) to sync from scratch`);
  return { prefix: Buffer.from(parsed.prefixBase64, 'base64'), datasetId: parsed.datasetId, seq: parsed.seq as number, hash: parsed.hash };
}

export function writeSyncState(dir: string, state: SyncState): void {
  const text = JSON.stringify({ format: SYNC_STATE_FORMAT, prefixBase64: state.prefix.toString('base64'), datasetId: state.datasetId, seq: state.seq, hash: state.hash });
  writeFileAtomic(join(dir, SYNC_STATE_FILE), Buffer.from(`${text}\n`), 0o600);
}
