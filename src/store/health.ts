/**
 * What the store has found wrong with its own storage while serving: damaged records (a log entry that fails its
 * chain check, a key record that fails its checksum) and failed writes (disk full, I/O errors). Only the request,
 * watch or child session that met a fault fails; the node goes on serving what is sound, and this record makes the
 * fault visible: logged and counted by the node, shown in `/v1/status`, and failing `/readyz`.
 */
import { join } from 'node:path';
import { ChainError, EntryDecodeError } from '../log/index.js';
import { isDataCorrupted, MercuryError } from '../errors/index.js';
import { DATA_FILE } from './data-files.js';
import { dataFileDamaged } from './lmdb-meta.js';

/** Distinct damage reports kept for status; later ones are counted, not kept. */
export const DAMAGE_REPORTS_MAX = 16;

export interface DamageReport {
  /** What was damaged: "log entry 17", "key \"a/b\"" (`keyName`), ... */
  readonly what: string;
  readonly message: string;
}

const KEY_NAME_PREFIX = 'key ';

/** A key as damage reports name it (bounded: a key is up to KEY_BYTES_MAX). */
export function keyName(key: Buffer): string {
  return `${KEY_NAME_PREFIX}${JSON.stringify(key.toString('utf8').slice(0, 200))}`;
}

/** Whether a report's `what` names a key (`keyName`), which not every caller may learn, rather than a store record. */
export function namesKey(what: string): boolean {
  return what.startsWith(KEY_NAME_PREFIX);
}

/**
 * The words every DATA_CORRUPTED message starts with, before what was damaged: what a caller who may not learn a key's
 * name is shown of a message that quotes one (src/server/routes/status.ts).
 */
export const DAMAGED_DATA_PHRASE = 'damaged data';

/** Throws-ready error for a record that failed its check on read. Status 500, code DATA_CORRUPTED. */
export function dataCorrupted(what: string, cause: unknown): MercuryError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new MercuryError('DATA_CORRUPTED', `${DAMAGED_DATA_PHRASE} on this node: ${what}: ${detail}; read from another node, and see "Damaged data" in the README`, {
    cause,
    details: { damaged: what },
  });
}

/**
 * What a start throws for damage it met reading the store of `dataDir` before serving (the key records it reads:
 * tokens, the root's signing key and URL): DATA_DIR_INVALID naming the record and what to do, as for damaged pages
 * and meta records, instead of DATA_CORRUPTED, whose "read from another node" answers a reader of a running node,
 * not an operator whose node will not start. Any other error is returned as it is.
 */
export function refusedAtStart(dataDir: string, error: unknown): unknown {
  if (!isDataCorrupted(error)) return error;
  const cause = error.cause instanceof Error ? error.cause.message : String(error.cause);
  return dataFileDamaged(join(dataDir, DATA_FILE), `${String(error.details?.damaged)}: ${cause}`, 'the node reads it to start');
}

/** errno values as lmdb-js reports them (`error.code` is the number) and as Node reports them (`error.code` is the name). */
const ENOSPC = 28;
const EIO = 5;
/** LMDB's MDB_MAP_FULL: the map size is reached; to the operator it is the same as a full disk. */
const MDB_MAP_FULL = -30792;
/**
 * LMDB's MDB_PANIC: a failed write of the meta page (on its O_DSYNC descriptor) leaves the environment unusable for
 * writes until it is opened again. Nothing acknowledged is lost (the transaction did not commit), but only a restart
 * of the node clears it.
 */
const MDB_PANIC = -30795;

/**
 * An I/O error with less than this free on the store's file system is taken for a full disk. LMDB writes its pages with
 * pwrite and reports a short write (the disk filled during the call: the part written holds the last free blocks) as
 * EIO ("TODO: Use which error code?" in mdb.c's mdb_page_flush), so a replica joining, a first start or a restore onto
 * a disk that filled said "I/O error; check its disk", never that it was full (audit, 2026-12-07). A disk that fails
 * with room to spare has more than this free: snapshots, joins and commits need far more.
 */
export const SHORT_WRITE_FREE_BYTES_MAX = 1024 * 1024;

/**
 * The stable error for a failed write transaction, or undefined when the failure is not the storage's (a bug, a bad
 * request). Disk full and the map size reached are STORAGE_FULL (507); an I/O error is STORAGE_IO_ERROR (500), unless
 * `freeBytes` (what the store's file system has free, undefined if unknown) says the disk is full.
 */
export function storageFault(error: unknown, freeBytes: () => number | undefined = () => undefined): MercuryError | undefined {
  if (error instanceof MercuryError) return undefined;
  const code = (error as { code?: unknown } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  if (code === ENOSPC || code === 'ENOSPC' || code === MDB_MAP_FULL || /No space left on device|MDB_MAP_FULL/.test(message))
    return new MercuryError('STORAGE_FULL', `the write was not applied: this node's storage is full (${message}); free space on its disk (or raise the map size), then retry`, { cause: error });
  if (code === MDB_PANIC || /MDB_PANIC/.test(message))
    return new MercuryError(
      'STORAGE_IO_ERROR',
      `the write was not applied: this node's storage failed a write and LMDB stopped taking writes (${message}); check its disk, then restart the node`,
      { cause: error },
    );
  if (code === EIO || code === 'EIO' || /Input\/output error/.test(message)) {
    const free = freeBytes();
    if (free !== undefined && free < SHORT_WRITE_FREE_BYTES_MAX)
      return new MercuryError(
        'STORAGE_FULL',
        `the write was not applied: this node's storage is full (LMDB reported "${message}" with ${free} bytes left free on its disk: a write the full disk cut short); free space on its disk, then retry`,
        { cause: error },
      );
    return new MercuryError('STORAGE_IO_ERROR', `the write was not applied: I/O error on this node's storage (${message}); check its disk`, { cause: error });
  }
  return undefined;
}

/** LMDB's MDB_READERS_FULL: every slot of its reader table holds a read transaction (src/limits.ts, LMDB_READERS_MAX). */
const MDB_READERS_FULL = -30790;

/**
 * The stable error for a read that found LMDB's reader table full, or undefined for any other failure: 503 OVERLOADED
 * (with Retry-After), since the reads that hold the slots end. The snapshot reader budget (snapshot-readers.ts) keeps
 * the node's own snapshots from filling the table; other processes that open the directory still can.
 */
export function readersFull(error: unknown): MercuryError | undefined {
  if (error instanceof MercuryError) return undefined;
  const code = (error as { code?: unknown } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  if (code !== MDB_READERS_FULL && !/MDB_READERS_FULL/.test(message)) return undefined;
  return new MercuryError(
    'OVERLOADED',
    `this node's storage has no free reader slot (LMDB MDB_READERS_FULL: as many read transactions are open as its reader table holds); retry after Retry-After`,
    { cause: error, details: { reason: 'READERS_FULL' } },
  );
}

/** LMDB's errors for a B-tree it cannot follow: MDB_PAGE_NOTFOUND, MDB_CORRUPTED, and MDB_BAD_TXN of a cursor. */
const MDB_PAGE_NOTFOUND = -30797;
const MDB_CORRUPTED = -30796;
const MDB_BAD_TXN = -30782;

/**
 * True for the errors LMDB raises when a read meets a damaged page (a page number past the file's end, a page of the
 * wrong type, a node whose flags promise a sub-page that is not there). MDB_BAD_TXN is taken only with the message of
 * a damaged duplicate node: elsewhere it means a transaction misused, a bug rather than damage.
 */
export function isLmdbDamage(error: unknown): boolean {
  if (error instanceof MercuryError) return false;
  const code = (error as { code?: unknown } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return code === MDB_PAGE_NOTFOUND || code === MDB_CORRUPTED || (code === MDB_BAD_TXN && /dupdata|mc_xcursor/.test(message));
}

/** True for the errors a stored entry record raises when its bytes are not what was written. */
export function isRecordDamage(error: unknown): boolean {
  return error instanceof ChainError || error instanceof EntryDecodeError;
}
