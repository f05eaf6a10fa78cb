/**
 * Key files: the root's private signing key (generated at first start into the data directory, mode 0600, or given
 * with `--signing-key FILE`) and the public keys a replica trusts (`--trust-key FILE`, repeatable). Files are PEM:
 * PKCS#8 for the private key, SPKI for public keys (what `openssl genpkey -algorithm ed25519` and `openssl pkey
 * -pubout` write). A `--trust-key` file must hold a public key: a private one is refused (see readTrustKey).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MercuryError, type ErrorCode } from '../errors/index.js';
import { readBounded, readFileBounded, SMALL_FILE_BYTES_MAX, type BoundedRead, type SecretFileWarn } from '../fs/bounded-read.js';
import { fileUnusable } from '../fs/dir-lock.js';
import { writeFileDurably } from '../fs/durable.js';

/** Where a root keeps the key it generated, and its public half for operators to hand to replicas. */
export const SIGNING_KEY_FILE = 'signing-key.pem';
export const SIGNING_PUBLIC_KEY_FILE = 'signing-key.pub.pem';
const KEY_FILE_MODE = 0o600;
const PUBLIC_KEY_FILE_MODE = 0o644;
/** An Ed25519 public key in PEM is 113 bytes; a larger file is damaged. */
const PUBLIC_KEY_FILE_BYTES_MAX = 4096;

/**
 * A key file's bytes, holding at most one PEM block. Node's key parsers take the first block of a file and ignore the
 * rest without a word, so a trust file with the old and the new key one after the other trusted only the first
 * (audit, 2026-12-06): refused instead, naming the count.
 */
function readKeyFile(path: string, what: string, secret?: SecretFileWarn, damaged?: DamagedKeyFile): Buffer {
  const bytes = readFileBounded(path, { what, bytesMax: SMALL_FILE_BYTES_MAX, secret, code: damaged?.code, remedy: damaged?.remedy });
  const blocks = bytes.toString('latin1').match(/-----BEGIN [^-\r\n]*-----/g)?.length ?? 0;
  if (blocks > 1)
    throw new MercuryError(
      damaged?.code ?? 'CONFIG_INVALID',
      `${what} ${path} holds ${blocks} PEM blocks; ${damaged?.remedy ?? `a key file holds one key (Node would read the first and ignore the rest): put each key in a file of its own${what === '--trust-key' ? ' and repeat --trust-key' : ''}`}`,
    );
  return bytes;
}

/**
 * How a key file that is not the operator's to give is refused (the data directory's own signing-key.pem): its code
 * and what to do, in place of CONFIG_INVALID and "give another file".
 */
interface DamagedKeyFile {
  readonly code: ErrorCode;
  readonly remedy: string;
}

/** What a `--signing-key` (or `--previous-signing-key`) file must hold, said when it does not. */
const PRIVATE_KEY_EXPECTED = 'give an Ed25519 private key in PEM, PKCS#8 (-----BEGIN PRIVATE KEY-----, as openssl genpkey -algorithm ed25519 writes)';
/** What a `--trust-key` file must hold, said when it does not. */
const PUBLIC_KEY_EXPECTED = "give an Ed25519 public key in PEM, SPKI (-----BEGIN PUBLIC KEY-----: the root's signing-key.pub.pem, or openssl pkey -pubout of its key)";

/**
 * Why Node could not take `text` as a key. Its own word for an empty file, or one that holds no PEM block, is OpenSSL's
 * "DECODER routines::unsupported", which tells the operator nothing (audit, 2026-12-07): those two are said plainly,
 * and OpenSSL's reason is kept for a PEM block it could not decode.
 */
function whyNotAKey(text: Buffer, error: unknown): string {
  const latin1 = text.toString('latin1');
  if (latin1.trim() === '') return 'the file is empty';
  if (!/-----BEGIN [^-\r\n]*-----/.test(latin1)) return 'the file holds no PEM block';
  return `OpenSSL: ${(error as Error).message}`;
}

/** Reads a private Ed25519 key from a PEM file; `warn` is told if its permissions let others read it (src/fs/bounded-read.ts). */
export function readSigningKey(path: string, what = '--signing-key', warn?: SecretFileWarn, damaged?: DamagedKeyFile): KeyObject {
  const text = readKeyFile(path, what, warn, damaged);
  const code = damaged?.code ?? 'CONFIG_INVALID';
  const remedy = damaged === undefined ? '' : `; ${damaged.remedy}`;
  let key: KeyObject;
  try {
    key = createPrivateKey(text);
  } catch (error) {
    throw new MercuryError(code, `${what} ${path} is not a PEM private key: ${whyNotAKey(text, error)}; ${damaged === undefined ? PRIVATE_KEY_EXPECTED : damaged.remedy}`, { cause: error });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new MercuryError(code, `${what} ${path} is an ${key.asymmetricKeyType} key; Mercury signs with Ed25519${remedy}`);
  return key;
}

/** A PEM private key of any kind: PKCS#8 (plain or encrypted), and the older per-algorithm and OpenSSH labels. */
const PRIVATE_KEY_PEM = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;

/**
 * Reads a public Ed25519 key from a PEM file (SPKI). A private key file is refused, though Node would take its public
 * half: accepting it (as Mercury once did, and documented) invited operators to copy the root's private key to every
 * replica, where whoever reads one replica's disk could sign entries that the whole tree takes (audit, 2026-12-06).
 */
export function readTrustKey(path: string): KeyObject {
  const text = readKeyFile(path, '--trust-key');
  if (PRIVATE_KEY_PEM.test(text.toString('latin1')))
    throw new MercuryError(
      'CONFIG_INVALID',
      `--trust-key ${path} holds a private key: give the public key (the root's signing-key.pub.pem, or openssl pkey -pubout of its key), and keep the private key on the root alone, since whoever holds it can sign entries every replica takes`,
    );
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch (error) {
    throw new MercuryError('CONFIG_INVALID', `--trust-key ${path} is not a PEM public key: ${whyNotAKey(text, error)}; ${PUBLIC_KEY_EXPECTED}`, { cause: error });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new MercuryError('CONFIG_INVALID', `--trust-key ${path} is an ${key.asymmetricKeyType} key; Mercury signs with Ed25519`);
  return key;
}

/**
 * The public half's bytes (a regular file of at most 4 KiB), 'missing', or 'not a file' (left alone: not Mercury's).
 * Judged by its open descriptor (readBounded), not by an lstat before the read.
 */
function publicHalfFound(dataDir: string, path: string): Buffer | 'missing' | 'not a file' {
  let read: BoundedRead;
  try {
    read = readBounded(path, PUBLIC_KEY_FILE_BYTES_MAX, { noFollow: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw fileUnusable(error, path, { dir: dataDir, done: 'read' });
  }
  if (read.found === 'other') return 'not a file';
  if (read.found === 'too large') return Buffer.alloc(0); // damaged: never read, written again
  return read.bytes;
}

/**
 * The root's signing key: from `file` if given, else the one in the data directory, generated (0600, with its public
 * half beside it) at first start. Both files are written whole and durably (src/fs/durable.ts), the public half first:
 * the private key, once there, signs entries that replicas check, so it must never be found empty or cut short after
 * a crash, and a crash between the two leaves no private key, and the next start makes a new pair. A public half found
 * missing beside the private key (removed, or lost to a crash of an older version between the two) is written again.
 *
 * `signedHeadSeq`: the head's seq when the head entry carries a signature. A root whose chain is already signed never
 * generates a key: its replicas trust the lost one, and a new pair would make them refuse everything from then on
 * while the root went on as if nothing happened (an audit deleted the file; the root started at seq 2 and overwrote the
 * public half). It refuses to start instead, saying how to restore or replace the key.
 */
export function loadOrCreateSigningKey(
  dataDir: string,
  file: string | undefined,
  signedHeadSeq?: number,
  warn?: SecretFileWarn,
): { key: KeyObject; generated: boolean; path: string; publicRewritten?: boolean } {
  if (file !== undefined) return { key: readSigningKey(file, '--signing-key', warn), generated: false, path: file };
  const path = join(dataDir, SIGNING_KEY_FILE);
  const publicPath = join(dataDir, SIGNING_PUBLIC_KEY_FILE);
  if (existsSync(path)) {
    // The directory's own file, damaged (cut short, emptied, replaced): not a usage error (CONFIG_INVALID, exit 2, "give
    // another file"), but damage, as README's error table says, with what to do about it (audit, 2026-12-07).
    const remedy =
      signedHeadSeq !== undefined
        ? `this root's entries are signed (up to seq ${signedHeadSeq}) and its replicas trust its key: restore ${path} from a backup; if it is lost for good, start with --signing-key NEW_KEY_FILE and give every replica the new public key with --trust-key`
        : `restore ${path} from a backup; if it is lost for good and no replica trusts its public half yet (no entry is signed with it), remove it and ${SIGNING_PUBLIC_KEY_FILE} to have a new pair made at the next start`;
    const key = readSigningKey(path, 'signing key', warn, { code: 'DATA_DIR_INVALID', remedy });
    const publicPem = createPublicKey(key).export({ type: 'spki', format: 'pem' });
    const found = publicHalfFound(dataDir, publicPath);
    if (found === 'missing') writeFileDurably(publicPath, publicPem, PUBLIC_KEY_FILE_MODE);
    // Damaged (emptied, cut short, another key's): operators copy this file to every replica's --trust-key, where a
    // damaged one fails the replica's start, and another key's makes it refuse everything the root signs. It is only
    // ever the private key's public half, so it is written again (audit, 2026-12-07).
    let publicRewritten = false;
    if (found !== 'missing' && found !== 'not a file' && !found.equals(Buffer.from(publicPem))) {
      writeFileDurably(publicPath, publicPem, PUBLIC_KEY_FILE_MODE);
      publicRewritten = true;
    }
    return { key, generated: false, path, publicRewritten };
  }
  if (signedHeadSeq !== undefined)
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${path} is missing, but this root's entries are signed (up to seq ${signedHeadSeq}) and its replicas trust that key: restore the file from a backup; if it is lost for good, start with --signing-key NEW_KEY_FILE and give every replica the new public key with --trust-key`,
    );
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileDurably(publicPath, publicKey.export({ type: 'spki', format: 'pem' }), PUBLIC_KEY_FILE_MODE);
  // Exclusive: never replace a key that appeared meanwhile (a second process on the same directory is refused by the lock).
  writeFileDurably(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), KEY_FILE_MODE, true);
  return { key: privateKey, generated: true, path };
}
