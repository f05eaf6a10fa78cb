/**
 * What a replica that was given trusted keys (`--trust-key`) accepts: entries and snapshots signed by one of them, or
 * by a key that a signed rotation entry introduced. Pure: the replication machine calls it on data it has already
 * checked for structure and chain; no I/O.
 *
 * Rules:
 * - A batch of consecutive entries (one ENTRIES frame) is vouched for by a valid signature on its last entry: that
 *   signature covers the last hash, which covers every earlier entry through the chain. If the last one's is missing or
 *   wrong, the latest entry before it whose signature verifies vouches for the prefix up to it (at most
 *   `BACKWARD_VERIFY_MAX` tries, so that a forging upstream costs little CPU); the rest is refused.
 * - Key rotation: an entry that puts `ROOT_KEY_KEY` (the raw 32-byte public key of the root's next signing key) must
 *   itself carry a valid signature by a key trusted at that point. From the next entry on, the new key is trusted
 *   besides the configured ones; an earlier rotated-in key no longer is. Retire an old configured key by removing it
 *   from `--trust-key`.
 * - A snapshot must be signed by the root over its seq, hash, key count and digest (signatures.ts). A relay cannot
 *   sign one, so a trusting replica takes snapshots only from the root.
 */
import type { KeyObject } from 'node:crypto';
import type { Entry } from '../log/index.js';
import {
  entrySignedMessage,
  heartbeatSignedMessage,
  keyId,
  publicKeyFromRaw,
  snapshotPartSignedMessage,
  snapshotSignedMessage,
  verifies,
  type SignedBeat,
  type SnapshotHead,
  type SnapshotPart,
} from './signatures.js';

/** Mercury's own keys in the key space (the reserved prefix, never served by the KV API). */
export const ROOT_KEY_KEY: Buffer = Buffer.from('\u0000mercury/root/signing-key', 'latin1');
/** The root's HTTP API base URL, recorded by the root when it is started with an advertised URL (src/node/forward.ts). */
export const ROOT_URL_KEY: Buffer = Buffer.from('\u0000mercury/root/url', 'latin1');
/** The reserved prefix of those keys: no client write may touch it. */
export const ROOT_KEYS_PREFIX: Buffer = Buffer.from('\u0000mercury/root/', 'latin1');

/** Signatures tried, newest first, before a batch whose last entry fails is refused from there. */
export const BACKWARD_VERIFY_MAX = 16;

export type TrustRefusalCode = 'SIGNATURE_MISSING' | 'SIGNATURE_INVALID';

export interface TrustRefusal {
  readonly code: TrustRefusalCode;
  readonly message: string;
}

export interface BatchVerdict {
  /** How many entries, from the first, are vouched for by a trusted signature. */
  readonly accepted: number;
  /** Set when the accepted prefix holds a rotation: the raw key trusted from then on. */
  readonly learnedKey?: Buffer;
  readonly refusal?: TrustRefusal;
}

/** The value an entry puts at ROOT_KEY_KEY (the last such put), if any. */
export function rotationKeyOf(entry: Entry): Buffer | undefined {
  let found: Buffer | undefined;
  for (const op of entry.ops) if (op.type === 'put' && op.key.length === ROOT_KEY_KEY.length && op.key.equals(ROOT_KEY_KEY)) found = op.value;
  return found;
}

export class TrustedKeys {
  private readonly configured: readonly KeyObject[];
  private learned: { raw: Buffer; key: KeyObject } | undefined;

  /** `learnedKey`: the raw key of the last rotation this node applied (read back from its store at start). */
  constructor(configured: readonly KeyObject[], learnedKey?: Buffer) {
    this.configured = [...configured];
    if (learnedKey !== undefined) this.learn(learnedKey);
  }

  /** Ids of the keys accepted now (configured first, then the rotated-in one). */
  keyIds(): { configured: string[]; learned: string | undefined } {
    return { configured: this.configured.map(keyId), learned: this.learned === undefined ? undefined : keyId(this.learned.key) };
  }

  private active(): KeyObject[] {
    return this.learned === undefined ? [...this.configured] : [...this.configured, this.learned.key];
  }

  /** Trusts `raw` from now on (a rotation applied, or installed with a snapshot). Ignores bytes that are no key. */
  learn(raw: Buffer): void {
    const key = publicKeyFromRaw(raw);
    if (key !== undefined) this.learned = { raw: Buffer.from(raw), key };
  }

  /**
   * Checks a batch of entries that already passed `verifyNext` in order. Does not change the trusted keys: the caller
   * calls `learn` with `learnedKey` once it applies the accepted prefix.
   */
  checkBatch(entries: readonly Entry[]): BatchVerdict {
    let keys = this.active();
    let established = 0;
    let learnedKey: Buffer | undefined;
    for (let i = 0; i < entries.length; i++) {
      const next = rotationKeyOf(entries[i]!);
      if (next === undefined) continue;
      const nextKey = publicKeyFromRaw(next);
      if (!signedByAny(keys, entries[i]!) || nextKey === undefined) {
        const accepted = settle(entries, established, i, keys);
        return {
          accepted,
          ...(learnedKey && { learnedKey }),
          refusal: {
            code: entries[i]!.signature === undefined ? 'SIGNATURE_MISSING' : 'SIGNATURE_INVALID',
            message:
              nextKey === undefined
                ? `entry ${entries[i]!.seq} names a root key that is not an Ed25519 key`
                : `key rotation entry ${entries[i]!.seq} ${describe(entries[i]!)} by a trusted key`,
          },
        };
      }
      established = i + 1;
      learnedKey = next;
      keys = [...this.configured, nextKey];
    }
    if (established === entries.length) return { accepted: established, ...(learnedKey && { learnedKey }) };
    const accepted = settle(entries, established, entries.length, keys);
    if (accepted === entries.length) return { accepted, ...(learnedKey && { learnedKey }) };
    const last = entries[entries.length - 1]!;
    return {
      accepted,
      ...(learnedKey && { learnedKey }),
      refusal: {
        code: last.signature === undefined ? 'SIGNATURE_MISSING' : 'SIGNATURE_INVALID',
        message: `entry ${last.seq} ${describe(last)} by a trusted key (${this.describeKeys(keys)})`,
      },
    };
  }

  /** Checks a snapshot's root signature; undefined when it verifies. */
  checkSnapshot(head: SnapshotHead, signature: Buffer | undefined): TrustRefusal | undefined {
    const keys = this.active();
    if (signature === undefined)
      return {
        code: 'SIGNATURE_MISSING',
        message: `snapshot at seq ${head.seq} is not signed by the root (only the root can sign a snapshot: a replica with --trust-key takes snapshots from the root)`,
      };
    const message = snapshotSignedMessage(head);
    if (keys.some((key) => verifies(key, message, signature))) return undefined;
    return { code: 'SIGNATURE_INVALID', message: `snapshot at seq ${head.seq} is not signed by a trusted key (${this.describeKeys(keys)})` };
  }

  /** Checks a SNAPSHOT_PROOF's root signature over the snapshot's first `part.keys` records; undefined when it verifies. */
  checkSnapshotPart(part: SnapshotPart, signature: Buffer): TrustRefusal | undefined {
    const keys = this.active();
    const message = snapshotPartSignedMessage(part);
    if (keys.some((key) => verifies(key, message, signature))) return undefined;
    return {
      code: 'SIGNATURE_INVALID',
      message: `snapshot at seq ${part.seq}: its first ${part.keys} records are not signed by a trusted key (${this.describeKeys(keys)})`,
    };
  }

  /**
   * Whether a heartbeat is signed by a key trusted now. A heartbeat that is not is never a refusal: right after a
   * rotation the root signs with a key that a replica still catching up learns only from an entry it has not applied.
   */
  checkHeartbeat(beat: SignedBeat, signature: Buffer): boolean {
    const message = heartbeatSignedMessage(beat);
    return this.active().some((key) => verifies(key, message, signature));
  }

  private describeKeys(keys: readonly KeyObject[]): string {
    return `trusted: ${keys.map(keyId).join(', ')}`;
  }
}

function signedByAny(keys: readonly KeyObject[], entry: Entry): boolean {
  if (entry.signature === undefined) return false;
  const message = entrySignedMessage(entry.hash);
  return keys.some((key) => verifies(key, message, entry.signature));
}

/**
 * How many entries of entries[0, end) are vouched for, knowing that entries[0, from) already are: the latest entry in
 * [from, end) whose signature verifies vouches for everything up to it.
 */
function settle(entries: readonly Entry[], from: number, end: number, keys: readonly KeyObject[]): number {
  for (let i = end - 1, tries = 0; i >= from && tries < BACKWARD_VERIFY_MAX; i--) {
    if (entries[i]!.signature === undefined) continue;
    tries++;
    if (signedByAny(keys, entries[i]!)) return i + 1;
  }
  return from;
}

function describe(entry: Entry): string {
  return entry.signature === undefined ? 'carries no signature' : 'is not signed';
}
