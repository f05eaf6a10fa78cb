/**
 * A malicious relay, as a stream rewriter: it sits between an upstream and a child and forges what passes, the way a
 * compromised intermediate replica would. It rewrites ENTRIES frames (one value changed, every hash of the frame
 * recomputed so that the chain links and hashes hold) and snapshots (a value changed in each chunk, the digest
 * recomputed, BEGIN claiming a root signature, each SNAPSHOT_PROOF carrying the forged digest). Signatures: kept as
 * they were (now over other hashes), stripped (proofs dropped), or made with the attacker's own key. Frames are re-framed with a valid CRC: only a signature check can catch the forgery.
 *
 * Used by the TCP proxy (test/support/tree.ts, `FlipProxy.forging`) and by the seeded simulation (a forging relay).
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { sealEntry, verifySelf, type EncodedEntry, type Op } from '../../src/log/index.js';
import { FrameDecoder, REPLICATION_LIMITS, SnapshotDigest, decodeMessage, encodeMessage, encodeSnapshotRecord, type Message } from '../../src/replication/index.js';
import type { SnapshotRecord } from '../../src/store/index.js';
import { Signer } from '../../src/trust/index.js';

export type SignatureForgery = 'keep' | 'strip' | 'attacker';

/** A key nobody trusts: what a forging relay signs with in `attacker` mode. */
export function attackerKey(): KeyObject {
  return createPrivateKey(generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
}

const FORGED = Buffer.from('forged by the relay');

function forgeOps(ops: readonly Op[]): Op[] {
  const index = ops.findIndex((op) => op.type === 'put');
  if (index < 0) return [...ops, { type: 'put', key: Buffer.from('forged'), value: FORGED }];
  return ops.map((op, i) => (i === index && op.type === 'put' ? { ...op, value: FORGED } : op));
}

/** Rewrites one direction of one connection, the bytes an upstream sends to its child, message by message. */
abstract class MessageRewriter {
  private readonly decoder = new FrameDecoder(REPLICATION_LIMITS.frameBytesMax);

  /** Bytes from the upstream, split anywhere; returns the bytes to pass to the child (whole frames). */
  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    for (const frame of this.decoder.push(chunk)) {
      const message = this.rewrite(decodeMessage(frame));
      if (message !== undefined) out.push(encodeMessage(message));
    }
    return Buffer.concat(out);
  }

  /** One whole frame (the simulation sends frames whole). */
  rewriteFrame(frame: Buffer): Buffer {
    return this.push(frame);
  }

  /** The message to pass on in place of `message`; undefined to drop it. */
  protected abstract rewrite(message: Message): Message | undefined;
}

/** A forging relay: entries and snapshots rewritten with recomputed hashes, and signatures as `signatures` says. */
export class Forger extends MessageRewriter {
  /** Frames forged so far (ENTRIES frames and snapshot chunks). */
  forged = 0;
  private readonly attacker: Signer | undefined;
  private snapshot: { seq: number; hash: Buffer; keyCount: number; digest: SnapshotDigest } | undefined;

  constructor(
    private readonly signatures: SignatureForgery,
    attacker?: KeyObject,
  ) {
    super();
    this.attacker = signatures === 'attacker' ? new Signer(attacker ?? attackerKey()) : undefined;
  }

  protected rewrite(message: Message): Message | undefined {
    switch (message.type) {
      case 'entries': {
        this.forged++;
        const records: Buffer[] = [];
        let prevHash: Buffer | undefined;
        for (const [i, record] of message.records.entries()) {
          const entry = verifySelf(record);
          prevHash ??= entry.prevHash;
          const ops = i === 0 ? forgeOps(entry.ops) : entry.ops;
          const sealed: EncodedEntry = sealEntry({ seq: entry.seq, timeMs: entry.timeMs, ops, authors: [] }, prevHash, this.sign(entry.signature));
          records.push(sealed.record);
          prevHash = sealed.entry.hash;
        }
        return { type: 'entries', records };
      }
      case 'snapshotBegin':
        this.snapshot = { seq: message.seq, hash: message.hash, keyCount: message.keyCount, digest: new SnapshotDigest() };
        return { ...message, signed: true };
      case 'snapshotChunk': {
        this.forged++;
        const records: SnapshotRecord[] = message.records.map((record, i) => (i === 0 ? { ...record, value: FORGED } : record));
        for (const record of records) this.snapshot?.digest.updateEncoded(encodeSnapshotRecord(record));
        return { type: 'snapshotChunk', records };
      }
      case 'snapshotProof': {
        // The root's proof of the records so far, made to match the forged ones: signed by the attacker, kept (now over
        // another digest), or dropped.
        const snapshot = this.snapshot;
        if (snapshot === undefined) return message;
        if (this.signatures === 'strip') return undefined;
        const digest = snapshot.digest.digestSoFar();
        const signature =
          this.attacker !== undefined
            ? this.attacker.signSnapshotPart({ seq: snapshot.seq, hash: snapshot.hash, keyCount: snapshot.keyCount, keys: message.keys, digest })
            : message.signature;
        return { ...message, digest, signature };
      }
      case 'snapshotEnd': {
        const snapshot = this.snapshot;
        this.snapshot = undefined;
        if (snapshot === undefined) return message;
        const digest = snapshot.digest.digest();
        const signature =
          this.signatures === 'strip'
            ? undefined
            : this.attacker !== undefined
              ? this.attacker.signSnapshot({ seq: snapshot.seq, hash: snapshot.hash, keyCount: snapshot.keyCount, digest })
              : (message.signature ?? Buffer.alloc(64, 1));
        return { type: 'snapshotEnd', digest, signature };
      }
      default:
        return message;
    }
  }

  private sign(original: Buffer | undefined): ((hash: Buffer) => Buffer) | undefined {
    if (this.signatures === 'strip') return undefined;
    if (this.attacker !== undefined) {
      const attacker = this.attacker;
      return (hash) => attacker.signEntry(hash);
    }
    return original === undefined ? undefined : () => original;
  }
}

/**
 * A withholding relay, as a stream rewriter: it passes everything but ENTRIES frames, which it drops. With `hide`, it
 * also rewrites each heartbeat's rootSeq to the first it passed on the connection (keeping the root's signature, now
 * over another seq), so that a child that does not check signatures cannot tell the root moved on.
 */
export class Withholder extends MessageRewriter {
  /** Entries dropped so far. */
  withheld = 0;
  private firstRootSeq: number | undefined;

  constructor(private readonly hide: boolean) {
    super();
  }

  protected rewrite(message: Message): Message | undefined {
    if (message.type === 'entries') {
      this.withheld += message.records.length;
      return undefined;
    }
    return message.type === 'heartbeat' && this.hide ? { ...message, rootSeq: (this.firstRootSeq ??= message.rootSeq) } : message;
  }
}
