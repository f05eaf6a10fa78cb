/**
 * Reading a file that a flag, an environment variable or a directory the process does not own names (tokens, PEM
 * certificates and keys, `put --file`, `mercury sync`'s state file), or one in a directory whoever can write it may
 * plant files in (the data directory's lock and unsynced-guard files, the demo's tokens and certificates), without
 * trusting what is at the path: a FIFO nobody writes would block the event loop in read(2) forever (not even SIGTERM is
 * handled then), and /dev/zero or an endless file would be read until memory runs out.
 *
 * So the file is opened with O_NONBLOCK (opening a FIFO for reading then returns at once instead of waiting for a
 * writer), the open descriptor is fstat'ed (no race with a swap after a stat of the path), anything but a regular file
 * is refused, and at most `bytesMax` bytes are read: a file larger than that, or one that grows past it while being
 * read, is refused, naming the limit. Each caller picks its limit, small for secrets and certificates. A check of the
 * path before (an lstat) proves nothing: what counts is what the descriptor holds. readBounded is that read, for
 * callers with messages of their own; readFileBounded words its refusals for a file the operator named.
 *
 * A file that holds a secret (a token, a private key) is also checked here, the one place every such read goes
 * through, for permissions that let others read it: see `secret` and secretFileWarning.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from 'node:fs';
import { MercuryError, type ErrorCode } from '../errors/index.js';

/** Enough for any token, PEM certificate chain or key a person would hand to Mercury, by a wide margin. */
export const SMALL_FILE_BYTES_MAX = 1024 * 1024;

export interface BoundedReadOptions {
  /** What names the file in an error, such as `--token-file` or `$MERCURY_CA`: the message is `<what> <path> ...`. */
  readonly what: string;
  readonly bytesMax: number;
  /** Fails with ELOOP on a symbolic link at the path itself (a directory the caller owns: see src/sync/files.ts). */
  readonly noFollow?: boolean;
  /** The error code of a refusal: CONFIG_INVALID unless the caller already uses another for its bad files. */
  readonly code?: ErrorCode;
  /** What to do about a file that is not a regular file, or too large: by default, give another path. */
  readonly remedy?: string;
  /** The file holds a secret: told of a warning if its permissions let others in (secretFileWarning). */
  readonly secret?: SecretFileWarn;
}

/** Takes a warning about a secret file: the whole line, and the file and its mode (`0644`) as fields for a JSON log. */
export type SecretFileWarn = (message: string, fields: { readonly file: string; readonly mode: string }) => void;

/**
 * What ssh does for a private key, as a warning rather than a refusal: a secret file this process's user owns, with any
 * permission for its group or others, is named with its mode and the chmod that fixes it. Not refused: a start that
 * worked yesterday must not fail on a mode nobody chose, and the secret is out already. Only files the user owns are
 * checked, as ssh does: one owned by another user is that user's choice, and this one could not chmod it; that is how
 * Kubernetes mounts Secrets (owned by root, group fsGroup, `defaultMode: 0440` in deploy/kubernetes/, 0644 by
 * default), which a warning at every start could not fix. Undefined when there is nothing to say (and on Windows,
 * which has no such modes).
 */
export function secretFileWarning(stat: Stats, what: string, path: string): { message: string; fields: { file: string; mode: string } } | undefined {
  const uid = process.getuid?.();
  if (uid === undefined || stat.uid !== uid || (stat.mode & 0o077) === 0) return undefined;
  const mode = `0${(stat.mode & 0o777).toString(8).padStart(3, '0')}`;
  return {
    message: `${what} ${path} holds a secret, and its mode ${mode} lets its group or others in: chmod 600 ${path}`,
    fields: { file: path, mode },
  };
}

/** What a file that is not a regular one is, for messages ("is a FIFO (named pipe)"). */
export function fileKind(stat: Stats): string {
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a FIFO (named pipe)';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  if (stat.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * What readBounded found at a path: the regular file's bytes and the fstat of the descriptor they were read from (the
 * file read, not whatever is at the path since), or why nothing was read.
 */
export type BoundedRead =
  | { readonly found: 'file'; readonly bytes: Buffer; readonly stat: Stats }
  /** Not a regular file: `kind` says what it is ("a FIFO (named pipe)", "a symbolic link" when not followed). */
  | { readonly found: 'other'; readonly kind: string }
  /** Over `bytesMax`: `size` as fstat gave it, undefined when the file grew past the limit while it was read. */
  | { readonly found: 'too large'; readonly size: number | undefined };

/**
 * The one read of a file this process does not control the contents of: opened with O_NONBLOCK (and O_NOFOLLOW if
 * `noFollow`), fstat'ed, read only if it is a regular file of at most `bytesMax` bytes. Whatever the caller checked of
 * the path before does not matter: a FIFO or a link swapped in since is met here, at the descriptor. The system's own
 * errors (ENOENT, EACCES, EIO) are thrown as they are, for the caller to name the file and what to do.
 */
export function readBounded(path: string, bytesMax: number, { noFollow = false }: { readonly noFollow?: boolean } = {}): BoundedRead {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | (noFollow ? constants.O_NOFOLLOW : 0));
  } catch (error) {
    // O_NOFOLLOW's refusal of a link is ELOOP, which also means a loop of links on the way: told apart by lstat.
    if (noFollow && (error as NodeJS.ErrnoException).code === 'ELOOP' && lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() === true)
      return { found: 'other', kind: 'a symbolic link' };
    throw error;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return { found: 'other', kind: fileKind(stat) };
    if (stat.size > bytesMax) return { found: 'too large', size: stat.size };
    // Sized by the fstat, plus one byte: a file that grew since is seen growing (and followed up to the limit).
    let buffer = Buffer.alloc(stat.size + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        if (length > bytesMax) return { found: 'too large', size: undefined };
        const larger = Buffer.alloc(Math.min(buffer.length * 2, bytesMax + 1));
        buffer.copy(larger);
        buffer = larger;
      }
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
    }
    if (length > bytesMax) return { found: 'too large', size: undefined };
    return { found: 'file', bytes: buffer.subarray(0, length), stat };
  } finally {
    closeSync(fd);
  }
}

/** The whole content of the regular file at `path`, at most `bytesMax` bytes; MercuryError naming the file otherwise. */
export function readFileBounded(path: string, options: BoundedReadOptions): Buffer {
  const { what, bytesMax } = options;
  const remedy = options.remedy ?? 'give the path of a regular file';
  const code = options.code ?? 'CONFIG_INVALID';
  let read: BoundedRead;
  try {
    read = readBounded(path, bytesMax, { noFollow: options.noFollow });
  } catch (error) {
    throw new MercuryError(code, `${what} ${path} cannot be read: ${(error as Error).message}`, { cause: error });
  }
  if (read.found === 'other') throw new MercuryError(code, `${what} ${path} is ${read.kind}; ${remedy}`);
  if (read.found === 'too large') throw tooLarge(code, what, path, bytesMax, read.size, remedy);
  if (options.secret !== undefined) {
    const warning = secretFileWarning(read.stat, what, path);
    if (warning !== undefined) options.secret(warning.message, warning.fields);
  }
  return read.bytes;
}

function tooLarge(code: ErrorCode, what: string, path: string, bytesMax: number, size: number | undefined, remedy: string): MercuryError {
  const found = size === undefined ? 'grew while it was read and is now' : `is ${size} bytes,`;
  return new MercuryError(code, `${what} ${path} ${found} over the ${bytesMax} bytes it may hold; ${remedy}`, { details: { path, bytesMax } });
}
