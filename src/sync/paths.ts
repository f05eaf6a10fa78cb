/**
 * Keys to file paths for `mercury sync PREFIX DIR`, without I/O. The key with PREFIX removed is the path under DIR,
 * `/` separating directories. A key is refused (skipped with a warning, never written) unless that rest is:
 *
 * - valid UTF-8, with no NUL and no control character (file names a shell or a program can pass around);
 * - a relative path: not empty, not starting with `/`, no empty segment (`a//b`, a trailing `/`), no `.` or `..`
 *   segment, so no key can name a file outside DIR or DIR itself;
 * - each segment at most FILE_NAME_BYTES_MAX bytes (Linux's NAME_MAX), and no segment starting with `.mercury-sync`,
 *   the names sync keeps for itself (its state file and its temporary files), compared case-folded (isReservedName);
 * - at most PATH_BYTES_MAX bytes in all.
 *
 * Refusing instead of escaping keeps the mapping one-to-one and readable in both directions: a file's path is its
 * key, so a program reads `DIR/db/primary` for the key `PREFIX` + `db/primary`, and sync finds the key of every file
 * it holds (for range deletes and after a snapshot) from its path alone.
 */
import { isUtf8 } from 'node:buffer';

/** Names in DIR (at any depth) that start with this belong to sync itself. */
export const SYNC_RESERVED_PREFIX = '.mercury-sync';
const FILE_NAME_BYTES_MAX = 255;
const PATH_BYTES_MAX = 4_000;

export type KeyPath = { readonly ok: true; readonly path: string } | { readonly ok: false; readonly reason: string };

/**
 * Whether a file name is one of sync's own on any file system DIR may be on: a case-insensitive one (macOS, Windows,
 * ext4 with casefold, a vfat or SMB mount) opens `.MERCURY-SYNC-state.json` or `.mercury-ſync-lock` (U+017F folds to
 * s) as sync's state or lock file, so the name is compared folded. Full case folding is close enough to
 * upper-then-lower case after NFKC for the ASCII prefix compared here.
 */
export function isReservedName(name: string): boolean {
  return name.normalize('NFKC').toUpperCase().toLowerCase().startsWith(SYNC_RESERVED_PREFIX);
}

/** The path under DIR for `key`, or why the key is refused. `key` must start with `prefix` (the watch guarantees it). */
export function keyToPath(key: Buffer, prefix: Buffer): KeyPath {
  if (!key.subarray(0, prefix.length).equals(prefix)) return { ok: false, reason: 'it is not under the prefix' };
  const rest = key.subarray(prefix.length);
  if (rest.length === 0) return { ok: false, reason: 'it is the prefix itself, which would be the directory' };
  if (!isUtf8(rest)) return { ok: false, reason: 'it is not valid UTF-8' };
  const text = rest.toString('utf8');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what a file name must not hold
  if (/[\u0000-\u001f\u007f]/.test(text)) return { ok: false, reason: 'it holds a NUL or another control character' };
  if (rest.length > PATH_BYTES_MAX) return { ok: false, reason: `its path is over ${PATH_BYTES_MAX} bytes` };
  if (text.startsWith('/')) return { ok: false, reason: 'it would be an absolute path' };
  for (const segment of text.split('/')) {
    if (segment === '') return { ok: false, reason: 'it has an empty path segment ("//" or a trailing "/")' };
    if (segment === '.' || segment === '..') return { ok: false, reason: `it has a "${segment}" segment, which could leave the directory` };
    if (Buffer.byteLength(segment) > FILE_NAME_BYTES_MAX) return { ok: false, reason: `a segment is over ${FILE_NAME_BYTES_MAX} bytes` };
    if (isReservedName(segment)) return { ok: false, reason: `a segment starts with "${SYNC_RESERVED_PREFIX}", which sync keeps for itself` };
  }
  return { ok: true, path: text };
}

/** The key of a file at `path` (relative to DIR, `/`-separated): the inverse of keyToPath. */
export function pathToKey(path: string, prefix: Buffer): Buffer {
  return Buffer.concat([prefix, Buffer.from(path, 'utf8')]);
}
