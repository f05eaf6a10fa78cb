/**
 * The serving side of replication for one connected child. A pure state machine like `Downstream`: events in (bytes
 * received, an entry applied locally, a heartbeat, time), actions out (frames to send, close). It reads the node's
 * chain through `LogSource` and keeps no entries of its own.
 *
 * Rules:
 * - The handshake decides between REFUSE, a stream from the child's head + 1, and a snapshot (see protocol.ts). A
 *   snapshot holds one of the node's snapshot readers (src/store/snapshot-readers.ts): when `openSnapshot` finds
 *   none free, the child is refused UNAVAILABLE (before WELCOME, or when it falls behind the retained log later) and
 *   tries its next upstream after its backoff.
 * - Entries reach a child only once this node has verified them: `localApplied` after the node's own write
 *   transaction (the root: after its fsync), and on a replica also `forwardVerified`, just before that write, for a
 *   child that is caught up (record 30 in docs/decisions.md says why a crash between the two is harmless). A child may
 *   therefore briefly hold an entry this node has not written; after a crash it is refused as BEHIND here and follows
 *   another upstream until this node has caught up again.
 * - Flow control: at most `childWindowBytesMax` bytes and `childWindowEntriesMax` entries are sent and not yet
 *   acknowledged. A child that keeps up gets entries straight from `localApplied` (no disk read); one that falls
 *   behind is served later from the log (`readLog`), never from a queue in memory; one that falls behind the retained
 *   log gets a fresh snapshot in the same session.
 * - Room in the child's queue: the adapter weighs each entries frame, and each snapshot chunk before it is read
 *   (`queueRoom`), against what the node's children hold unsent, so that children that read nothing hold their shares,
 *   not a frame each past them; a frame without room waits like one beyond the window (docs/decisions.md, record 87).
 * - Work per turn: one call sends at most about `pumpTurnBytesMax` from the snapshot or the log, then asks for a
 *   `continue` (the adapter calls `resume` on its next turn). Filling a whole window in one call held a root's event
 *   loop ~130 ms for a joining child (16 MiB of snapshot pages read and framed) and wrote nothing to the child until
 *   the end, so the child idled that long before its first page; now its first page leaves after one chunk.
 * - A child that sends no ACK for `childAckTimeoutMs` (it acks every `ackIntervalMs`) is closed, so a dead peer never
 *   pins a snapshot or a socket buffer. So is one whose window stays full for `childAckTimeoutMs` with nothing more
 *   acknowledged: ACKs that acknowledge nothing keep a peer that never reads alive, and it would hold a window of
 *   frames in memory and the snapshot's read transaction (which keeps LMDB from reusing pages) for as long as it likes.
 *   And during a snapshot, one that holds half its window unread and acknowledges less than `snapshotPaceBytesMin` in
 *   a `snapshotPaceWindowMs` (a trickle restarts the stall clock, and would hold the read transaction as long).
 *
 * The adapter creates one `Upstream` per accepted connection, feeds it `receive`, `localApplied`, `heartbeat`, `tick`
 * (by `nextTickMs`), `drained` (its socket's 'drain') and `closed`, and calls `chainReset` on every session after the node installed a snapshot. Every
 * `nowMs` is monotonic (`Clock.monotonicMs`): a step of the wall clock must not fire or hold back a deadline.
 */
import assert from 'node:assert/strict';
import type { EncodedEntry } from '../log/index.js';
import { isDataCorrupted, isReadersFull } from '../errors/index.js';
import type { LogLevel } from '../logging/index.js';
import { PaceWindow } from '../clock/index.js';
import { FRAME_HEADER_BYTES, PATH_NODES_MAX, REFUSE_QUOTE_BYTES_MAX, REPLICATION_LIMITS, validateReplicationLimits, type ReplicationLimits } from './limits.js';
import {
  FrameDecoder,
  ProtocolError,
  SnapshotDigest,
  announcedHttpUrl,
  clipUtf8,
  decodeMessage,
  encodeEntries,
  encodeMessage,
  snapshotChunkRecordBytes,
  entriesFrameBytes,
  SHARED_NODE_ID_HINT,
  type AckMessage,
  type Heartbeat,
  type HelloMessage,
  type Message,
  type RefuseReason,
} from './protocol.js';
import type { Divergence } from './downstream.js';
import type { LogSource, SnapshotSource } from './source.js';
import type { SnapshotHead, SnapshotPart } from '../trust/index.js';

export type UpstreamAction =
  | { readonly type: 'send'; readonly bytes: Buffer }
  /** Close the connection (after sending everything queued before it). */
  | { readonly type: 'close'; readonly reason: string }
  | { readonly type: 'log'; readonly level: LogLevel; readonly message: string; readonly fields: Readonly<Record<string, unknown>> }
  /**
   * Call `resume` on a later turn of the event loop (after the frames before it are written): the window is open but
   * this turn sent `pumpTurnBytesMax`. At most one is outstanding per session.
   */
  | { readonly type: 'continue' };

export type UpstreamPhase = 'hello' | 'snapshot' | 'streaming' | 'closed';

export interface UpstreamOptions {
  /** This node's id. */
  readonly nodeId: string;
  /** This node's HTTP API base URL, told to children in WELCOME so they can forward client writes ('' if none). */
  readonly httpUrl?: string;
  readonly source: LogSource;
  /** This node's ancestors, root first ([] on the root): a child among them would close a loop. */
  readonly ancestors: () => readonly string[];
  /**
   * The newest heartbeat this node knows (path = its ancestors), sent right after WELCOME so that a child that just
   * failed over hears from the root without waiting a whole interval. The root returns a fresh one.
   */
  readonly latestHeartbeat: () => Heartbeat | undefined;
  readonly limits?: ReplicationLimits;
  /** When the connection was accepted. */
  readonly nowMs: number;
  /**
   * Checks the child's credential (HELLO's token, or what the adapter knows of the connection: a verified client
   * certificate), first thing in the handshake. Absent: every child is accepted.
   */
  readonly authorizeChild?: (credential: string | undefined) => ChildAuthorization;
  /**
   * The root's snapshot signer (src/trust/): snapshots this node makes are signed, with a SNAPSHOT_PROOF every
   * `snapshotProofBytes` and a signed SNAPSHOT_END, so that a replica with trusted keys accepts them. Only the root has
   * one; a relay's snapshots go unsigned.
   */
  readonly signer?: SnapshotSigner;
  /**
   * A relay: why it stopped following its own upstream (its chain diverged from the root's) and the head it held then,
   * undefined while it follows. Such a relay holds the forked chain: a child at that head would otherwise be welcomed
   * here and never learn it diverged (it would cycle between this relay and the root that refuses it), so it is
   * refused CHAIN_DIVERGED; any other child UPSTREAM_DIVERGED (the relay cannot serve it and cannot judge its chain).
   */
  readonly diverged?: () => Divergence | undefined;
  /**
   * Whether this child's socket may queue a frame of `frameBytes` more now (the adapter weighs it against the child's
   * share, its host's part and the total of what the node's children hold unsent: `childQueuedBytesShare`,
   * `childrenQueuedBytesPerAddressMax`, `childrenQueuedBytesMax`). Asked before each entries frame is framed and each
   * snapshot chunk is read (weighed at its target: it passes it by a record at most). A frame without room waits, as
   * with a full window, until the child is asked again (`drained`, an ACK, an entry, a turn). Absent: always.
   */
  readonly queueRoom?: (frameBytes: number) => boolean;
  /**
   * Why this child may not be sent a snapshot now although a snapshot reader may be free (its host's children hold
   * their most snapshots, `childSnapshotsPerAddressMax`): it is refused UNAVAILABLE with this message. Absent: never.
   */
  readonly snapshotRefusal?: () => string | undefined;
}

/** What signs a snapshot: the root's `Signer` (src/trust/signatures.ts). */
export interface SnapshotSigner {
  signSnapshot(head: SnapshotHead): Buffer;
  signSnapshotPart(part: SnapshotPart): Buffer;
}

/** Whom a child replicates as (`principal`: a token id and name; undefined with auth off), or why it is refused. */
export type ChildAuthorization =
  | { readonly principal: { readonly id: string; readonly name: string } | undefined }
  | { readonly refuse: 'UNAUTHENTICATED' | 'PERMISSION_DENIED'; readonly message: string };

export interface UpstreamStatus {
  readonly phase: UpstreamPhase;
  readonly childNodeId: string | undefined;
  /** The child's own HTTP API as its HELLO named it (informational: what a dashboard follows down the tree). */
  readonly childHttpUrl: string | undefined;
  /** The name of the token (or certificate grant) the child replicates with; undefined with auth off. */
  readonly principal: string | undefined;
  /** The child's ancestors when it connected (informational). */
  readonly childPath: readonly string[];
  readonly sentSeq: number;
  readonly ackedSeq: number;
  /** Bytes of frames sent to the child since HELLO, and of those, the ones it has not acknowledged receiving. */
  readonly sentBytes: number;
  readonly unackedBytes: number;
  readonly connectedMs: number;
  readonly snapshot: { readonly seq: number; readonly keyCount: number; readonly keysSent: number } | undefined;
}

interface OutgoingSnapshot {
  readonly source: SnapshotSource;
  readonly digest: SnapshotDigest;
  keysSent: number;
  /** Record bytes sent since the last SNAPSHOT_PROOF (or the start). */
  bytesSinceProof: number;
}

export class Upstream {
  private readonly nodeId: string;
  private readonly httpUrl: string;
  private readonly source: LogSource;
  private readonly ancestors: () => readonly string[];
  private readonly latestHeartbeat: () => Heartbeat | undefined;
  private readonly authorizeChild: ((credential: string | undefined) => ChildAuthorization) | undefined;
  private readonly diverged: (() => Divergence | undefined) | undefined;
  private readonly queueRoom: ((frameBytes: number) => boolean) | undefined;
  private readonly snapshotRefusal: (() => string | undefined) | undefined;
  /** Whom the child authenticated as: revoking that token ends the session. */
  private childPrincipal: { readonly id: string; readonly name: string } | undefined;
  private readonly limits: ReplicationLimits;
  private readonly decoder: FrameDecoder;
  private readonly startedMs: number;
  private readonly signer: SnapshotSigner | undefined;
  private phase: UpstreamPhase = 'hello';
  private hello: HelloMessage | undefined;
  /** The child's HTTP URL as its HELLO announced it, if that is a URL to show (announcedHttpUrl). */
  private childHttpUrl: string | undefined;
  private snapshot: OutgoingSnapshot | undefined;
  /** This session announced a snapshot without the root's signature (this node is a relay). */
  private sentUnsignedSnapshot = false;
  /** Last seq sent (or known to the child). */
  private sentSeq = 0;
  private ackedSeq = 0;
  private sentBytes = 0;
  private ackedBytes = 0;
  /** A `continue` was asked for and its `resume` has not come yet. */
  private continuePending = false;
  private lastAckMs: number;
  /** Since when the window has been full with nothing more acknowledged; undefined while it is not full. */
  private stalledSinceMs: number | undefined;
  /** The snapshot's current pace window, over the bytes acknowledged (undefined outside a snapshot). */
  private pace: PaceWindow | undefined;
  /**
   * The weight of the frame that last found no room in the child's queue (`queueRoom`), until a weighed frame goes
   * out: asked again before the log is read again, so that a child held back costs one question per event, not a read.
   */
  private heldFrameBytes: number | undefined;

  constructor(options: UpstreamOptions) {
    this.nodeId = options.nodeId;
    this.httpUrl = options.httpUrl ?? '';
    this.source = options.source;
    this.ancestors = options.ancestors;
    this.latestHeartbeat = options.latestHeartbeat;
    this.authorizeChild = options.authorizeChild;
    this.diverged = options.diverged;
    this.queueRoom = options.queueRoom;
    this.snapshotRefusal = options.snapshotRefusal;
    this.limits = validateReplicationLimits(options.limits ?? REPLICATION_LIMITS);
    // A child only sends HELLO and ACK: anything longer is refused from its length, before the body is buffered.
    this.decoder = new FrameDecoder(this.limits.childFrameBytesMax);
    this.startedMs = options.nowMs;
    this.lastAckMs = options.nowMs;
    this.signer = options.signer;
  }

  /** The token id the child authenticated with (undefined before the handshake, or with auth off). */
  get principalId(): string | undefined {
    return this.childPrincipal?.id;
  }

  /** The child's token was revoked (or expired: `why`): REFUSE UNAUTHENTICATED and close. */
  revoked(_nowMs: number, why: (tokenId: string) => string = () => 'was revoked'): UpstreamAction[] {
    if (this.phase === 'closed') return [];
    const id = this.childPrincipal?.id ?? '?';
    return this.refuse('UNAUTHENTICATED', `token ${id} ${why(id)}; this node no longer serves it`, []);
  }

  /**
   * The child's token was given another grant (its record replaced): `recheck` judges the principal the session was
   * admitted as under the new grant. One that still passes (the grant only widened, or was renamed) goes on as the
   * principal it returns (decision 57); one that no longer does (its `replicate` scope or credential taken away) ends
   * the session, and the child's next HELLO is checked against the new grant. The same REFUSE code as a revocation
   * (children of every version reconnect on it), but not its message: "was revoked" sent the operator of a replica
   * whose token had only changed looking for a revocation that never happened.
   */
  regranted(_nowMs: number, recheck: (principal: { readonly id: string; readonly name: string } | undefined) => ChildAuthorization): UpstreamAction[] {
    if (this.phase === 'closed') return [];
    const verdict = recheck(this.childPrincipal);
    if ('principal' in verdict) {
      this.childPrincipal = verdict.principal;
      return [];
    }
    return this.refuse(
      'UNAUTHENTICATED',
      `token ${this.childPrincipal?.id ?? '?'} was given another grant that no longer lets it replicate (${verdict.message}): this session ends, and the replica's next HELLO is checked against the new grant`,
      [],
    );
  }

  get isClosed(): boolean {
    return this.phase === 'closed';
  }

  /** Bytes arrived from the child, split anywhere. */
  receive(nowMs: number, chunk: Buffer): UpstreamAction[] {
    const actions: UpstreamAction[] = [];
    if (this.phase === 'closed') return actions;
    let frames;
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      return this.protocolError(error, actions);
    }
    for (const frame of frames) {
      let message: Message;
      try {
        message = decodeMessage(frame);
      } catch (error) {
        return this.protocolError(error, actions);
      }
      if (this.phase === 'hello') {
        if (message.type !== 'hello') return this.refuse('PROTOCOL_ERROR', `expected HELLO, got ${message.type}`, actions);
        this.handshake(nowMs, message, actions);
      } else if (message.type === 'ack') {
        this.acknowledged(nowMs, message, actions);
      } else if (message.type === 'refuse') {
        // A child that refuses what this node sent (data not signed by a key it trusts) says so before it leaves:
        // logged here so that the operator of this side learns it too. A relay's snapshot, which it cannot sign, is
        // declined by every verifying child as a matter of course (record 65): told, not warned of.
        const unsignable = this.sentUnsignedSnapshot && message.reason === 'SIGNATURE_MISSING';
        actions.push({
          type: 'log',
          level: unsignable ? 'info' : 'warn',
          message: unsignable ? 'child takes its snapshot from the root: it verifies signatures, and only the root can sign a snapshot' : 'child refused this node\'s data',
          fields: { child: this.hello?.nodeId, reason: message.reason, error: message.message },
        });
        return this.close(`child refused: ${message.reason}: ${message.message}`, actions);
      } else {
        return this.refuse('PROTOCOL_ERROR', `MESSAGE_UNEXPECTED: ${message.type} from a child`, actions);
      }
      if (this.isClosed) return actions;
    }
    this.pump(actions);
    this.noteWindow(nowMs);
    return actions;
  }

  /**
   * A replica verified these entries (chain, and signatures when it trusts keys) and is about to apply them: a child
   * that is exactly caught up gets them now, beside the node's own write (docs/decisions.md, record 30). Nothing is
   * read from the log here, since it does not hold them yet; `localApplied` follows once they are written, and serves
   * from the log whoever could not take them from memory.
   */
  forwardVerified(nowMs: number, entries: readonly EncodedEntry[]): UpstreamAction[] {
    const actions: UpstreamAction[] = [];
    if (this.phase !== 'streaming') return actions;
    const start = this.firstUnsent(entries);
    if (start < entries.length && entries[start]!.entry.seq === this.sentSeq + 1) this.sendEntries(entries.slice(start), actions);
    this.noteWindow(nowMs);
    return actions;
  }

  /** This node applied (or, on the root, durably committed) these entries, in seq order. */
  localApplied(nowMs: number, entries: readonly EncodedEntry[]): UpstreamAction[] {
    const actions: UpstreamAction[] = [];
    if (this.phase !== 'streaming') return actions;
    // Entries forwarded before the write (`forwardVerified`) are skipped here.
    const start = this.firstUnsent(entries);
    // Straight from memory only when the child is exactly caught up; otherwise the log serves it in order.
    if (start < entries.length && entries[start]!.entry.seq === this.sentSeq + 1) this.sendEntries(entries.slice(start), actions);
    this.pump(actions);
    this.noteWindow(nowMs);
    return actions;
  }

  /** Index of the first of `entries` (in seq order) that the child has not been sent. */
  private firstUnsent(entries: readonly EncodedEntry[]): number {
    let start = 0;
    while (start < entries.length && entries[start]!.entry.seq <= this.sentSeq) start++;
    return start;
  }

  /**
   * A heartbeat to forward; its path is this node's ancestors ([] on the root). Heartbeats may go a sixteenth of the
   * window past it, no further: a child catching up keeps its window full, and still gets one a second between its
   * ACKs (its lag is reckoned from them), while one that does not read would otherwise have them queued without bound
   * (an audit's hostile upstream sent them as fast as it could; four children that never read took the relay from 61
   * to 583 MiB in 14 s).
   */
  heartbeat(nowMs: number, heartbeat: Heartbeat): UpstreamAction[] {
    const actions: UpstreamAction[] = [];
    if (this.phase !== 'streaming' && this.phase !== 'snapshot') return actions;
    if (this.unackedBytes >= this.limits.childWindowBytesMax + this.limits.childWindowBytesMax / 16) return actions;
    this.sendHeartbeat(heartbeat, actions);
    this.noteWindow(nowMs);
    return actions;
  }

  /** The turn after a `continue`: sends what the window allows, again at most `pumpTurnBytesMax`. */
  resume(nowMs: number): UpstreamAction[] {
    const actions: UpstreamAction[] = [];
    this.continuePending = false;
    if (this.phase !== 'streaming' && this.phase !== 'snapshot') return actions;
    this.pump(actions);
    this.noteWindow(nowMs);
    return actions;
  }

  /**
   * The child's socket sent all it held (the adapter's 'drain'): a frame held for want of room is weighed again now,
   * rather than at the child's next ACK (up to `ackIntervalMs` away once it has read everything). Nothing when no frame
   * is held, or when a `continue` is on its way (its `resume` sends).
   */
  drained(nowMs: number): UpstreamAction[] {
    const actions: UpstreamAction[] = [];
    if (this.heldFrameBytes === undefined || this.continuePending) return actions;
    if (this.phase !== 'streaming' && this.phase !== 'snapshot') return actions;
    this.pump(actions);
    this.noteWindow(nowMs);
    return actions;
  }

  /** Time passed: enforce the handshake and acknowledgement timeouts. */
  tick(nowMs: number): UpstreamAction[] {
    const actions: UpstreamAction[] = [];
    if (this.phase === 'hello' && nowMs - this.startedMs >= this.limits.handshakeTimeoutMs)
      return this.close(`no HELLO within ${this.limits.handshakeTimeoutMs} ms`, actions);
    if (this.phase !== 'streaming' && this.phase !== 'snapshot') return actions;
    if (nowMs - this.lastAckMs >= this.limits.childAckTimeoutMs) return this.close(`child sent no ACK for ${this.limits.childAckTimeoutMs} ms`, actions);
    const slow = this.tooSlowForSnapshot(nowMs);
    if (slow !== undefined) {
      const paced = `${slow.takenBytes} bytes in ${slow.elapsedMs} ms`;
      actions.push({
        type: 'log',
        level: 'warn',
        message: 'child too slow for a snapshot',
        fields: { child: this.hello?.nodeId, acknowledged: paced, bytesMin: this.limits.snapshotPaceBytesMin, windowMs: this.limits.snapshotPaceWindowMs },
      });
      return this.close(
        `CHILD_TOO_SLOW: the child acknowledged ${paced} of a snapshot (at least ${this.limits.snapshotPaceBytesMin} per ${this.limits.snapshotPaceWindowMs} ms while it holds half its window unread); a snapshot keeps the node from reusing pages`,
        actions,
      );
    }
    if (this.stalledSinceMs !== undefined && nowMs - this.stalledSinceMs >= this.limits.childAckTimeoutMs) {
      const detail = `${this.unackedBytes} bytes and ${this.sentSeq - this.ackedSeq} entries unacknowledged`;
      const what = this.snapshot === undefined ? 'entries' : `a snapshot (${this.snapshot.keysSent} of ${this.snapshot.source.keyCount} keys sent)`;
      actions.push({
        type: 'log',
        level: 'warn',
        message: 'child stalled',
        fields: { child: this.hello?.nodeId, timeoutMs: this.limits.childAckTimeoutMs, unackedBytes: this.unackedBytes, ackedSeq: this.ackedSeq },
      });
      return this.close(`CHILD_STALLED: the child acknowledged nothing for ${this.limits.childAckTimeoutMs} ms with its window full (${detail}) while it was sent ${what}`, actions);
    }
    return actions;
  }

  nextTickMs(): number | undefined {
    if (this.phase === 'hello') return this.startedMs + this.limits.handshakeTimeoutMs;
    if (this.phase === 'closed') return undefined;
    let deadlineMs = this.lastAckMs + this.limits.childAckTimeoutMs;
    if (this.stalledSinceMs !== undefined) deadlineMs = Math.min(deadlineMs, this.stalledSinceMs + this.limits.childAckTimeoutMs);
    if (this.pace !== undefined) deadlineMs = Math.min(deadlineMs, this.pace.endsAtMs);
    return deadlineMs;
  }

  /**
   * The figures of a pace window of the snapshot that ended with the child below the floor while it held half its
   * window unread (a child that keeps up with a slow node is not judged), else undefined; a window that ends otherwise
   * starts the next one.
   */
  private tooSlowForSnapshot(nowMs: number): { takenBytes: number; elapsedMs: number } | undefined {
    if (this.phase !== 'snapshot') {
      this.pace = undefined;
      return undefined;
    }
    if (this.pace === undefined) {
      this.pace = new PaceWindow(this.limits.snapshotPaceWindowMs, nowMs, this.ackedBytes);
      return undefined;
    }
    const judged = this.pace.judge(nowMs, this.ackedBytes);
    const lagging = this.sentBytes - this.ackedBytes >= this.limits.childWindowBytesMax / 2;
    return judged !== undefined && lagging && judged.takenBytes < this.limits.snapshotPaceBytesMin ? judged : undefined;
  }


  /** The connection closed (either side). Releases a snapshot being read. */
  closed(_nowMs: number): UpstreamAction[] {
    this.release();
    this.phase = 'closed';
    return [];
  }

  /** The node replaced its chain (installed a snapshot): the child's position means nothing any more. */
  chainReset(_nowMs: number): UpstreamAction[] {
    if (this.phase === 'closed') return [];
    return this.close('this node installed a snapshot; reconnect', []);
  }

  /** The child is being sent a snapshot (and holds one of the node's snapshot readers). */
  get sendingSnapshot(): boolean {
    return this.snapshot !== undefined;
  }

  /** Bytes sent to the child that it has not acknowledged receiving. */
  get unackedBytes(): number {
    return this.sentBytes - this.ackedBytes;
  }

  status(): UpstreamStatus {
    return {
      phase: this.phase,
      childNodeId: this.hello?.nodeId,
      childHttpUrl: this.childHttpUrl,
      principal: this.childPrincipal?.name,
      childPath: this.hello?.path ?? [],
      sentSeq: this.sentSeq,
      ackedSeq: this.ackedSeq,
      sentBytes: this.sentBytes,
      unackedBytes: this.unackedBytes,
      connectedMs: this.startedMs,
      snapshot: this.snapshot === undefined ? undefined : { seq: this.snapshot.source.seq, keyCount: this.snapshot.source.keyCount, keysSent: this.snapshot.keysSent },
    };
  }

  // -------------------------------------------------------------------------------------------------------------

  private handshake(nowMs: number, hello: HelloMessage, actions: UpstreamAction[]): void {
    this.hello = hello;
    if (this.authorizeChild !== undefined) {
      const authorization = this.authorizeChild(hello.credential);
      if ('refuse' in authorization) return void this.refuse(authorization.refuse, authorization.message, actions);
      this.childPrincipal = authorization.principal;
    }
    const datasetId = this.source.datasetId();
    const ancestors = this.ancestors();
    if (datasetId === '') return void this.refuse('UNAVAILABLE', 'this node has not joined a dataset yet', actions);
    if (hello.nodeId === this.nodeId) return void this.refuse('SELF', `node ${this.nodeId} cannot replicate from itself: ${SHARED_NODE_ID_HINT}`, actions);
    if (ancestors.includes(hello.nodeId))
      return void this.refuse('LOOP', `node ${hello.nodeId} is an ancestor of this node (${[...ancestors, this.nodeId].join(' > ')})`, actions);
    // The child forwards heartbeats with the path root .. this node, child: that must stay within the maximum.
    if (ancestors.length + 2 > PATH_NODES_MAX) return void this.refuse('PATH_TOO_LONG', `this node is ${ancestors.length} levels deep`, actions);
    if (hello.datasetId !== '' && hello.datasetId !== datasetId)
      return void this.refuse('DATASET_MISMATCH', `this node holds dataset ${datasetId}, the child ${hello.datasetId}`, actions);
    const diverged = this.diverged?.();
    if (diverged !== undefined) return void this.refuseDiverged(hello, diverged, actions);
    const head = this.source.head();
    let mode: 'stream' | 'snapshot';
    if (hello.resync || hello.datasetId === '') mode = 'snapshot';
    else if (hello.head.seq > head.seq)
      return void this.refuse('BEHIND', `this node is at seq ${head.seq}, the child at ${hello.head.seq}; try another upstream`, actions);
    else {
      let hash;
      try {
        hash = this.source.hashAt(hello.head.seq);
      } catch (error) {
        if (isDataCorrupted(error)) return void this.damaged(error, actions);
        if (!isReadersFull(error)) throw error;
        return void this.refuse('UNAVAILABLE', `${error.message}; try another upstream or later`, actions);
      }
      if (hash !== undefined && !hash.equals(hello.head.hash))
        return void this.refuse(
          'CHAIN_DIVERGED',
          `the child's entry ${hello.head.seq} has hash ${hello.head.hash.toString('hex')}, this node's ${hash.toString('hex')}; resync the child`,
          actions,
        );
      // An unknown hash means the child's head is older than anything retained: only a snapshot can bring it back.
      mode = hash !== undefined && hello.head.seq + 1 >= this.source.firstSeq() ? 'stream' : 'snapshot';
    }
    // Opened before WELCOME, so that a node that cannot send one (busy, or its head damaged) refuses the child before it begins.
    const snapshot = mode === 'snapshot' ? this.openSnapshot(actions) : undefined;
    if (mode === 'snapshot' && snapshot === undefined) return;
    // A child taking a snapshot holds nothing of it yet, whatever head it claimed (that head is never checked).
    this.sentSeq = mode === 'stream' ? hello.head.seq : 0;
    this.ackedSeq = this.sentSeq;
    this.lastAckMs = nowMs;
    this.send(
      encodeMessage({
        type: 'welcome',
        datasetId,
        nodeId: this.nodeId,
        httpUrl: this.httpUrl,
        path: [...ancestors, this.nodeId],
        head,
        mode,
        fromSeq: mode === 'stream' ? hello.head.seq + 1 : 0,
      }),
      actions,
    );
    actions.push({
      type: 'log',
      level: 'info',
      message: 'child connected',
      fields: { child: hello.nodeId, mode, childSeq: hello.head.seq, seq: head.seq, resync: hello.resync },
    });
    this.childHttpUrl = announcedHttpUrl(hello.httpUrl);
    if (this.childHttpUrl === undefined && hello.httpUrl !== '')
      actions.push({
        type: 'log',
        level: 'warn',
        message: 'child announced an HTTP URL that is not an http(s) URL; status shows none',
        fields: { child: hello.nodeId, httpUrl: hello.httpUrl },
      });
    this.phase = 'streaming';
    if (snapshot !== undefined) this.startSnapshot(snapshot, actions);
    const heartbeat = this.latestHeartbeat();
    if (heartbeat !== undefined) this.sendHeartbeat(heartbeat, actions);
  }

  private acknowledged(nowMs: number, ack: AckMessage, actions: UpstreamAction[]): void {
    if (ack.receivedBytes > this.sentBytes || ack.receivedBytes < this.ackedBytes)
      return void this.refuse('PROTOCOL_ERROR', `ACK of ${ack.receivedBytes} bytes; ${this.ackedBytes} acknowledged and ${this.sentBytes} sent`, actions);
    if (ack.appliedSeq > Math.max(this.sentSeq, this.hello!.head.seq))
      return void this.refuse('PROTOCOL_ERROR', `ACK of seq ${ack.appliedSeq}, only ${this.sentSeq} sent`, actions);
    // A child resyncing from a head past the snapshot's ACKs that head until it applies the snapshot: taken, but what
    // it acknowledges is at most what it was sent, so that a claimed head neither opens the window nor shows in status.
    const appliedSeq = Math.min(ack.appliedSeq, this.sentSeq);
    // Progress, however little, restarts the stall clock: a slow link is not a stalled child. An ACK of nothing new
    // only proves that the peer is alive, which is not enough to keep a full window pinned.
    if (ack.receivedBytes > this.ackedBytes || appliedSeq > this.ackedSeq) this.stalledSinceMs = undefined;
    // A snapshot's first pace window begins at its first ACK (tick judges the windows).
    if (this.phase === 'snapshot' && this.pace === undefined) this.pace = new PaceWindow(this.limits.snapshotPaceWindowMs, nowMs, this.ackedBytes);
    this.ackedBytes = ack.receivedBytes;
    this.ackedSeq = appliedSeq;
    this.lastAckMs = nowMs;
  }

  /** Starts the stall clock when the window is found full (`tick` closes the child if it stays full without progress). */
  private noteWindow(nowMs: number): void {
    if (this.phase !== 'streaming' && this.phase !== 'snapshot') return;
    // A frame held for want of room counts as a full window while the child has bytes to acknowledge: one that reads
    // acknowledges them, and one that does not is closed as stalled. With nothing to acknowledge it only waits its turn.
    if (this.windowOpen() && (this.heldFrameBytes === undefined || this.unackedBytes === 0)) this.stalledSinceMs = undefined;
    else this.stalledSinceMs ??= nowMs;
  }

  /**
   * This relay stopped following: a snapshot from here would be the forked chain, and a stream would extend a chain it
   * knows is not the root's, so every child is refused. The verdict the relay received was about its own head, the
   * one it still holds: a child that streams from exactly that head shares the condemned chain up to it, and hears
   * CHAIN_DIVERGED. Any other child may hold a chain the root would serve (one behind the fork point holds entries of
   * both histories, and the relay does not know where the fork is): it hears UPSTREAM_DIVERGED, an abstention that
   * never stops a child on its own. So does a child asking for a snapshot, whatever its head: it is not asking whether
   * its chain is the root's, and a vote would work against the resync an operator asked for.
   */
  private refuseDiverged(hello: HelloMessage, diverged: Divergence, actions: UpstreamAction[]): void {
    // The reason quotes the refusal this relay got, which may quote another relay's, up a chain of relays at this
    // head: quoted whole, it pushed the remedy past the end of the REFUSE (REFUSE_MESSAGE_BYTES_MAX) five levels down.
    const reason = clipUtf8(diverged.reason, REFUSE_QUOTE_BYTES_MAX);
    const why = `this relay stopped following at seq ${diverged.head.seq}: its chain diverged from its upstream's (${reason}${reason.length < diverged.reason.length ? '…' : ''})`;
    if (hello.resync || hello.datasetId === '') return void this.refuse('UPSTREAM_DIVERGED', `${why}; take the snapshot from another upstream`, actions);
    if (hello.head.seq === diverged.head.seq && hello.head.hash.equals(diverged.head.hash))
      return void this.refuse('CHAIN_DIVERGED', `${why}, and the child holds the same head; resync the child from another upstream`, actions);
    this.refuse(
      'UPSTREAM_DIVERGED',
      `${why}; the child's head (seq ${hello.head.seq}) is not that one, so this says nothing about the child's chain: follow another upstream`,
      actions,
    );
  }

  /**
   * The node holds its most snapshots (its snapshot readers: backups, children and watches share them): UNAVAILABLE,
   * which sends the child to its next upstream, or back here after its backoff.
   */
  private refuseBusy(actions: UpstreamAction[]): UpstreamAction[] {
    return this.refuse('UNAVAILABLE', 'this node is sending its most snapshots at once; try another upstream or later', actions);
  }

  private startSnapshot(source: SnapshotSource, actions: UpstreamAction[]): void {
    assert.equal(this.snapshot, undefined);
    this.snapshot = { source, digest: new SnapshotDigest(), keysSent: 0, bytesSinceProof: 0 };
    this.phase = 'snapshot';
    if (this.signer === undefined) this.sentUnsignedSnapshot = true;
    this.send(
      encodeMessage({ type: 'snapshotBegin', seq: source.seq, hash: source.hash, keyCount: source.keyCount, signed: this.signer !== undefined }),
      actions,
    );
    actions.push({ type: 'log', level: 'info', message: 'sending snapshot', fields: { child: this.hello?.nodeId, seq: source.seq, keyCount: source.keyCount } });
  }

  /**
   * A snapshot for the child, or undefined once the child is refused UNAVAILABLE: no snapshot reader is free, or the
   * head the snapshot would be taken at is damaged (DATA_CORRUPTED; found: it was thrown from the socket handler and
   * the process exited).
   */
  private openSnapshot(actions: UpstreamAction[]): SnapshotSource | undefined {
    const refusal = this.snapshotRefusal?.();
    if (refusal !== undefined) {
      this.refuse('UNAVAILABLE', refusal, actions);
      return undefined;
    }
    let source;
    try {
      source = this.source.openSnapshot();
    } catch (error) {
      if (isReadersFull(error)) {
        this.refuse('UNAVAILABLE', `${error.message}; try another upstream or later`, actions);
        return undefined;
      }
      if (!isDataCorrupted(error)) throw error;
      this.damaged(error, actions);
      return undefined;
    }
    if (source === undefined) this.refuseBusy(actions);
    return source;
  }

  /** A streaming child fell behind the retained log: a new snapshot, or REFUSE when none can be opened now. */
  private snapshotAgain(actions: UpstreamAction[]): boolean {
    const source = this.openSnapshot(actions);
    if (source === undefined) return false;
    this.startSnapshot(source, actions);
    return true;
  }

  /** Vouches for the records sent so far, so that the child need not take the rest on faith until the end. */
  private sendProof(snapshot: OutgoingSnapshot, signer: SnapshotSigner, actions: UpstreamAction[]): void {
    const { seq, hash, keyCount } = snapshot.source;
    const part = { seq, hash, keyCount, keys: snapshot.keysSent, digest: snapshot.digest.digestSoFar() };
    this.send(encodeMessage({ type: 'snapshotProof', keys: part.keys, digest: part.digest, signature: signer.signSnapshotPart(part) }), actions);
    snapshot.bytesSinceProof = 0;
  }

  private windowOpen(): boolean {
    if (this.unackedBytes >= this.limits.childWindowBytesMax) return false;
    return this.phase === 'snapshot' || this.sentSeq - this.ackedSeq < this.limits.childWindowEntriesMax;
  }

  /** Whether the child's queue has room for a frame of `frameBytes` (see `queueRoom`); remembers the weight if not. */
  private roomFor(frameBytes: number): boolean {
    if (this.queueRoom === undefined || this.queueRoom(frameBytes)) {
      this.heldFrameBytes = undefined;
      return true;
    }
    this.heldFrameBytes = frameBytes;
    return false;
  }

  /** Sends whatever the window allows: the rest of a snapshot, then entries from the log up to the head. */
  private pump(actions: UpstreamAction[]): void {
    const turnEndBytes = this.sentBytes + this.limits.pumpTurnBytesMax;
    while (this.windowOpen()) {
      if (this.sentBytes >= turnEndBytes) {
        if (!this.continuePending) actions.push({ type: 'continue' });
        this.continuePending = true;
        return;
      }
      if (this.phase === 'snapshot') {
        const snapshot = this.snapshot!;
        // Weighed before it is read: a chunk read and then held would cost the memory the question saves.
        if (!this.roomFor(FRAME_HEADER_BYTES + 4 + this.limits.snapshotChunkBytesTarget)) return;
        let chunk;
        try {
          chunk = snapshot.source.nextChunk(this.limits.snapshotChunkBytesTarget);
        } catch (error) {
          if (!isDataCorrupted(error)) throw error;
          this.damaged(error, actions);
          return;
        }
        if (chunk !== undefined) {
          // The digest covers the records' canonical encoding, which is what the frame carries: hashed from there, each
          // record is encoded once.
          const records = snapshotChunkRecordBytes(chunk.frame);
          snapshot.digest.updateEncoded(records);
          snapshot.keysSent += chunk.count;
          snapshot.bytesSinceProof += records.length;
          this.send(chunk.frame, actions);
          if (this.signer !== undefined && snapshot.bytesSinceProof >= this.limits.snapshotProofBytes) this.sendProof(snapshot, this.signer, actions);
          continue;
        }
        const digest = snapshot.digest.digest();
        const source = snapshot.source;
        const signature = this.signer?.signSnapshot({ seq: source.seq, hash: source.hash, keyCount: source.keyCount, digest });
        this.send(encodeMessage({ type: 'snapshotEnd', digest, signature }), actions);
        this.sentSeq = snapshot.source.seq;
        this.release();
        this.phase = 'streaming';
        actions.push({ type: 'log', level: 'info', message: 'snapshot sent', fields: { child: this.hello?.nodeId, seq: this.sentSeq, keys: snapshot.keysSent } });
        continue;
      }
      if (this.phase !== 'streaming') return;
      const head = this.source.head();
      if (this.sentSeq >= head.seq) return;
      if (this.sentSeq + 1 < this.source.firstSeq()) {
        if (!this.snapshotAgain(actions)) return;
        continue;
      }
      // The frame that found no room last is the one these entries would make (or one a little smaller).
      if (this.heldFrameBytes !== undefined && !this.roomFor(this.heldFrameBytes)) return;
      const limitEntries = Math.min(this.limits.entriesFrameEntriesMax, this.limits.childWindowEntriesMax - (this.sentSeq - this.ackedSeq));
      let entries;
      try {
        entries = this.source.readLog(this.sentSeq + 1, limitEntries, this.limits.entriesFrameBytesTarget);
      } catch (error) {
        if (isReadersFull(error)) {
          this.refuse('UNAVAILABLE', `${error.message}; try another upstream or later`, actions);
          return;
        }
        if (!isDataCorrupted(error)) throw error;
        this.damaged(error, actions);
        return;
      }
      if (entries.length === 0) {
        // Trimmed between firstSeq() and readLog(): the child is now behind the retained log.
        if (!this.snapshotAgain(actions)) return;
        continue;
      }
      if (!this.sendEntries(entries, actions)) return;
    }
  }

  /**
   * Sends consecutive entries following sentSeq, in frames, while the window and the child's queue allow; false when a
   * frame found no room in the queue.
   */
  private sendEntries(entries: readonly EncodedEntry[], actions: UpstreamAction[]): boolean {
    let index = 0;
    while (index < entries.length && this.windowOpen()) {
      const entriesMax = Math.min(this.limits.entriesFrameEntriesMax, this.limits.childWindowEntriesMax - (this.sentSeq - this.ackedSeq));
      const records: Buffer[] = [];
      let bytes = 0;
      while (index < entries.length && records.length < entriesMax) {
        const { entry, record } = entries[index]!;
        assert.equal(entry.seq, this.sentSeq + 1 + records.length, 'entries to send must follow the last sent one');
        if (records.length > 0 && bytes + record.length > this.limits.entriesFrameBytesTarget) break;
        records.push(record);
        bytes += record.length;
        index++;
      }
      const frameBytes = entriesFrameBytes(bytes, records.length);
      assert.ok(frameBytes <= this.limits.frameBytesMax, 'an entry exceeds the frame limit');
      if (!this.roomFor(frameBytes)) return false;
      this.send(encodeEntries(records), actions);
      this.sentSeq += records.length;
    }
    return true;
  }

  private sendHeartbeat(heartbeat: Heartbeat, actions: UpstreamAction[]): void {
    const path = [...heartbeat.path, this.nodeId];
    if (path.length > PATH_NODES_MAX) return;
    this.send(encodeMessage({ type: 'heartbeat', rootSeq: heartbeat.rootSeq, rootTimeMs: heartbeat.rootTimeMs, path, proof: heartbeat.proof }), actions);
  }

  private send(bytes: Buffer, actions: UpstreamAction[]): void {
    this.sentBytes += bytes.length;
    actions.push({ type: 'send', bytes });
  }

  private protocolError(error: unknown, actions: UpstreamAction[]): UpstreamAction[] {
    if (!(error instanceof ProtocolError)) throw error;
    return this.refuse(error.code === 'VERSION_UNSUPPORTED' ? 'PROTOCOL_VERSION' : 'PROTOCOL_ERROR', `${error.code}: ${error.message}`, actions);
  }

  /**
   * This node met damaged data reading for the child: only this session ends. UNAVAILABLE sends the child on to its
   * next upstream; the store has logged and counted the damage.
   */
  private damaged(error: Error, actions: UpstreamAction[]): void {
    this.refuse('UNAVAILABLE', error.message, actions);
  }

  private refuse(reason: RefuseReason, message: string, actions: UpstreamAction[]): UpstreamAction[] {
    this.send(encodeMessage({ type: 'refuse', reason, message }), actions);
    actions.push({ type: 'log', level: 'warn', message: 'refused child', fields: { child: this.hello?.nodeId, reason, detail: message } });
    return this.close(`refused: ${reason}: ${message}`, actions);
  }

  private close(reason: string, actions: UpstreamAction[]): UpstreamAction[] {
    this.release();
    this.phase = 'closed';
    actions.push({ type: 'close', reason });
    return actions;
  }

  private release(): void {
    if (this.snapshot === undefined) return;
    this.snapshot.source.close();
    this.snapshot = undefined;
  }
}
