/**
 * Reading a file that a flag, an environment variable or a directory the process does not own names (tokens, PEM
 * certificates and keys, `put --file`, `mercury sync`'s state file), without trusting what is at the path: a FIFO
 * nobody writes would block the event loop in read(2) forever (not even SIGTERM is handled then), and /dev/zero or an
 * endless file would be read until memory runs out.
 *
 * So the file is opened with O_NONBLOCK (opening a FIFO for reading then returns at once instead of waiting for a
 * writer), the open descriptor is fstat'ed (no race with a swap after a stat of the path), anything but a regular file
 * is refused, and at most `bytesMax` bytes are read: a file larger than that, or one that grows past it while being
 * read, is refused, naming the limit. Each caller picks its limit, small for secrets and certificates.
 *
 * A file that holds a secret (a token, a private key) is also checked here, the one place every such read goes
 * through, for permissions that let others read it: see `secret` and secretFileWarning.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
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

/** The whole content of the regular file at `path`, at most `bytesMax` bytes; MercuryError naming the file otherwise. */
export function readFileBounded(path: string, options: BoundedReadOptions): Buffer {
  const { what, bytesMax } = options;
  const remedy = options.remedy ?? 'give the path of a regular file';
  const code = options.code ?? 'CONFIG_INVALID';
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | (options.noFollow === true ? constants.O_NOFOLLOW : 0));
  } catch (error) {
    throw new MercuryError(code, `${what} ${path} cannot be read: ${(error as Error).message}`, { cause: error });
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new MercuryError(code, `${what} ${path} is ${fileKind(stat)}; ${remedy}`);
    if (options.secret !== undefined) {
      const warning = secretFileWarning(stat, what, path);
      if (warning !== undefined) options.secret(warning.message, warning.fields);
    }
    if (stat.size > bytesMax) throw tooLarge(code, what, path, bytesMax, stat.size, remedy);
    // Sized by the fstat, plus one byte: a file that grew since is seen growing (and followed up to the limit).
    let buffer = Buffer.alloc(stat.size + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        if (length > bytesMax) throw tooLarge(code, what, path, bytesMax, undefined, remedy);
        const larger = Buffer.alloc(Math.min(buffer.length * 2, bytesMax + 1));
        buffer.copy(larger);
        buffer = larger;
      }
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
    }
    if (length > bytesMax) throw tooLarge(code, what, path, bytesMax, undefined, remedy);
    return buffer.subarray(0, length);
  } catch (error) {
    if (error instanceof MercuryError) throw error;
    throw new MercuryError(code, `${what} ${path} cannot be read: ${(error as Error).message}`, { cause: error });
  } finally {
    closeSync(fd);
  }
}

function tooLarge(code: ErrorCode, what: string, path: string, bytesMax: number, size: number | undefined, remedy: string): MercuryError {
  const found = size === undefined ? 'grew while it was read and is now' : `is ${size} bytes,`;
  return new MercuryError(code, `${what} ${path} ${found} over the ${bytesMax} bytes it may hold; ${remedy}`, { details: { path, bytesMax } });
}
