/**
 * What the root signs and how a receiver checks it: pure functions over node:crypto's Ed25519, no I/O.
 *
 * ## Signed messages (all integers big-endian)
 *
 * ```
 * entry     "mercury entry v1\0"    || hash (32 bytes, the entry's chain hash)
 * snapshot  "mercury snapshot v1\0" || u64 seq || hash (of the entry at seq) || u64 keyCount || digest (32 bytes)
 * part      "mercury snapshot part v1\0" || u64 seq || hash || u64 keyCount || u64 keys || digest (32 bytes)
 * heartbeat "mercury heartbeat v1\0" || epoch (8 bytes) || u64 beat || u64 rootSeq || u64 rootTimeMs
 * ```
 *
 * A part vouches for a snapshot's first `keys` records (their digest so far): a SNAPSHOT_PROOF between chunks, so
 * that a replica learns a snapshot is the root's long before its end (src/replication/protocol.ts).
 *
 * The prefixes keep one kind of signature from ever being taken for the other. A signature on an entry's hash vouches
 * for the whole chain up to it; a snapshot's signature vouches for its position (seq and hash) and its content (the
 * digest over every record, src/replication/protocol.ts), which only the root can sign: a relay serves entries it
 * cannot forge, but a snapshot it makes itself carries no signature (docs/security.md). A heartbeat's signature vouches
 * that the root was at rootSeq when it made beat number `beat` of its process `epoch` (random at each start): a relay
 * can neither make a fresh one nor claim a seq the root did not have (decision record 47).
 */
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { HASH_BYTES, SIGNATURE_BYTES } from '../log/index.js';

const ENTRY_PREFIX = Buffer.from('mercury entry v1\0', 'latin1');
const SNAPSHOT_PREFIX = Buffer.from('mercury snapshot v1\0', 'latin1');
const SNAPSHOT_PART_PREFIX = Buffer.from('mercury snapshot part v1\0', 'latin1');
const HEARTBEAT_PREFIX = Buffer.from('mercury heartbeat v1\0', 'latin1');
/** A root process's heartbeat epoch: random bytes drawn at its start. */
export const HEARTBEAT_EPOCH_BYTES = 8;
/** Raw Ed25519 public keys are 32 bytes; SPKI DER wraps them in this fixed 12-byte header. */
export const PUBLIC_KEY_BYTES = 32;
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function entrySignedMessage(hash: Buffer): Buffer {
  if (hash.length !== HASH_BYTES) throw new RangeError(`hash of ${hash.length} bytes`);
  return Buffer.concat([ENTRY_PREFIX, hash]);
}

export interface SnapshotHead {
  readonly seq: number;
  readonly hash: Buffer;
  readonly keyCount: number;
  readonly digest: Buffer;
}

/** A snapshot's first `keys` records, whose digest so far is `digest`. */
export interface SnapshotPart extends SnapshotHead {
  readonly keys: number;
}

function u64(value: number): Buffer {
  const buffer = Buffer.allocUnsafe(8);
  buffer.writeBigUInt64BE(BigInt(value), 0);
  return buffer;
}

export function snapshotSignedMessage(head: SnapshotHead): Buffer {
  return Buffer.concat([SNAPSHOT_PREFIX, u64(head.seq), head.hash, u64(head.keyCount), head.digest]);
}

export function snapshotPartSignedMessage(part: SnapshotPart): Buffer {
  return Buffer.concat([SNAPSHOT_PART_PREFIX, u64(part.seq), part.hash, u64(part.keyCount), u64(part.keys), part.digest]);
}

/** What a root's signed heartbeat says: beat `beat` of its process `epoch`, at rootSeq and rootTimeMs. */
export interface SignedBeat {
  readonly epoch: Buffer;
  readonly beat: number;
  readonly rootSeq: number;
  readonly rootTimeMs: number;
}

export function heartbeatSignedMessage(beat: SignedBeat): Buffer {
  if (beat.epoch.length !== HEARTBEAT_EPOCH_BYTES) throw new RangeError(`epoch of ${beat.epoch.length} bytes`);
  return Buffer.concat([HEARTBEAT_PREFIX, beat.epoch, u64(beat.beat), u64(beat.rootSeq), u64(beat.rootTimeMs)]);
}

/** The root's signer: makes entry, snapshot and heartbeat signatures with its private key. */
export class Signer {
  readonly publicKey: KeyObject;
  readonly keyId: string;

  constructor(private readonly privateKey: KeyObject) {
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new RangeError(`signing key is ${privateKey.asymmetricKeyType}, not ed25519`);
    this.publicKey = createPublicKey(privateKey);
    this.keyId = keyId(this.publicKey);
  }

  signEntry(hash: Buffer): Buffer {
    return sign(null, entrySignedMessage(hash), this.privateKey);
  }

  signSnapshot(head: SnapshotHead): Buffer {
    return sign(null, snapshotSignedMessage(head), this.privateKey);
  }

  signSnapshotPart(part: SnapshotPart): Buffer {
    return sign(null, snapshotPartSignedMessage(part), this.privateKey);
  }

  signHeartbeat(beat: SignedBeat): Buffer {
    return sign(null, heartbeatSignedMessage(beat), this.privateKey);
  }
}

/** The raw 32 bytes of an Ed25519 public key (what a rotation entry records). */
export function rawPublicKey(key: KeyObject): Buffer {
  const der = key.export({ type: 'spki', format: 'der' });
  if (der.length !== ED25519_SPKI_PREFIX.length + PUBLIC_KEY_BYTES || !der.subarray(0, ED25519_SPKI_PREFIX.length).equals(ED25519_SPKI_PREFIX))
    throw new RangeError('not an Ed25519 public key');
  return Buffer.from(der.subarray(ED25519_SPKI_PREFIX.length));
}

/** An Ed25519 public key from its raw 32 bytes; undefined for anything else. */
export function publicKeyFromRaw(raw: Buffer): KeyObject | undefined {
  if (raw.length !== PUBLIC_KEY_BYTES) return undefined;
  try {
    return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  } catch {
    return undefined;
  }
}

/** A short stable name for a public key, for logs and status: the first 16 hex digits of its raw bytes. */
export function keyId(key: KeyObject): string {
  return rawPublicKey(key).toString('hex').slice(0, 16);
}

/** Whether `signature` is `key`'s over `message`. Never throws for hostile bytes. */
export function verifies(key: KeyObject, message: Buffer, signature: Buffer | undefined): boolean {
  if (signature === undefined || signature.length !== SIGNATURE_BYTES) return false;
  try {
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}
