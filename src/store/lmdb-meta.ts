/**
 * A check of LMDB's two meta pages before the environment is opened. LMDB trusts them: a damaged root page number or
 * page size sends it reading outside the map, and the process dies with SIGSEGV before any error can be reported.
 * This reads the few fields that LMDB relies on and refuses the directory with a clear message instead.
 *
 * Layout, as lmdb-js 3 (LMDB 0.9 with its page header of 24 bytes) writes it, little-endian; meta page i at i * psize:
 *
 * ```
 *   0 u64 pgno (= i)    8 u64 txnid    16 u16 pad    18 u16 flags (P_META 0x08)    20 u16 lower    22 u16 upper
 *  24 u32 magic 0xBEEFC0DE    28 u32 version    32 u64 address    40 u64 mapsize
 *  48 MDB_db free (48 bytes: u32 pad = page size in the free DB, u16 flags, u16 depth, u64 branch, leaf, overflow,
 *     entries, root)    96 MDB_db main (same)    144 u64 last_pg    152 u64 txnid
 * ```
 */
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';

const LMDB_MAGIC = 0xbeefc0de;
const P_META = 0x08;
const META_BYTES = 160;
const PAGE_BYTES_MIN = 512;
const PAGE_BYTES_MAX = 65_536;
/** LMDB's P_INVALID: the root of an empty database. */
const NO_PAGE = 0xffff_ffff_ffff_ffffn;

function readAt(fd: number, position: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const read = readSync(fd, buffer, 0, length, position);
  return buffer.subarray(0, read);
}

/** What is wrong with one meta page, or undefined. */
function metaProblem(meta: Buffer, index: number, pageBytes: number, fileBytes: number): string | undefined {
  if (meta.length < META_BYTES) return `meta page ${index} is cut short`;
  if (meta.readUInt32LE(24) !== LMDB_MAGIC) return `meta page ${index} has no LMDB magic number`;
  if ((meta.readUInt16LE(18) & P_META) === 0) return `meta page ${index} is not marked as a meta page`;
  if (meta.readBigUInt64LE(0) !== BigInt(index)) return `meta page ${index} names itself page ${meta.readBigUInt64LE(0)}`;
  const lastPage = meta.readBigUInt64LE(144);
  if (lastPage < 1n || (lastPage + 1n) * BigInt(pageBytes) > BigInt(fileBytes))
    return `meta page ${index} says the file has ${lastPage + 1n} pages of ${pageBytes} bytes, but it is ${fileBytes} bytes`;
  for (const [name, at] of [
    ['free', 48 + 40],
    ['main', 96 + 40],
  ] as const) {
    const root = meta.readBigUInt64LE(at);
    if (root !== NO_PAGE && (root < 2n || root > lastPage)) return `meta page ${index}: the ${name} database's root page ${root} is outside the file`;
  }
  return undefined;
}

/**
 * Checks `dir`/data.mdb's meta pages; returns a description of the damage, or undefined when they look sound (or
 * there is no data file yet).
 */
export function lmdbMetaProblem(dataFile: string): string | undefined {
  if (!existsSync(dataFile)) return undefined;
  const fd = openSync(dataFile, 'r');
  try {
    const fileBytes = fstatSync(fd).size;
    if (fileBytes === 0) return undefined; // created, never written: LMDB initialises it
    const first = readAt(fd, 0, META_BYTES);
    if (first.length < META_BYTES) return `the file is ${fileBytes} bytes, shorter than a meta page`;
    const pageBytes = first.readUInt32LE(48);
    if (pageBytes < PAGE_BYTES_MIN || pageBytes > PAGE_BYTES_MAX || (pageBytes & (pageBytes - 1)) !== 0)
      return `meta page 0 gives a page size of ${pageBytes} bytes`;
    const second = readAt(fd, pageBytes, META_BYTES);
    const problem = metaProblem(first, 0, pageBytes, fileBytes) ?? metaProblem(second, 1, pageBytes, fileBytes);
    if (problem !== undefined) return problem;
    if (first.readUInt32LE(28) !== second.readUInt32LE(28)) return `the meta pages disagree on the LMDB format version`;
    return undefined;
  } finally {
    closeSync(fd);
  }
}
