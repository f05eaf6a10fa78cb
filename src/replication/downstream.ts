/**
 * The replica side of replication: which upstream a node follows, and what it accepts from it. A pure state machine:
 * the adapter feeds it events (each with the current time) and performs the actions it returns, in order, before
 * feeding the next event. It owns no socket, no timer and no storage.
 *
 * Rules (from the design and issue 3):
 * - Upstreams are tried in the configured order; after a failure the next one is tried, wrapping around, after a
 *   delay that doubles per consecutive failure (with jitter) up to `reconnectBackoffMsMax`, so that a node whose
 *   upstreams are all down never spins. A session that stayed up for `backoffResetMs` resets the backoff.
 * - Every entry is verified with `verifyNext` against the node's head before it is applied; a frame's verified prefix
 *   is applied, the first failing record drops the upstream.
 * - An upstream that sends nothing (no entry, no snapshot chunk, no heartbeat) for
 *   `upstreamStaleMs + depth * upstreamStaleHopMs`, closes, refuses, or breaks the protocol is dropped.
 * - Time: every `nowMs` given to this machine is monotonic (`Clock.monotonicMs`), and every deadline derives from it
 *   alone. The root's wall clock (`rootTimeMs` in heartbeats, entry times) serves only the reported lag in ms: a
 *   root whose clock steps, or a heartbeat carrying a skewed or hostile `rootTimeMs`, can never make a healthy
 *   upstream look stale. Heartbeats are ordered by `rootSeq`: one whose rootSeq is below that of the last heartbeat
 *   of the session and below this node's head is old news (replayed by an upstream that is behind); it still proves
 *   the link alive, but is not forwarded nor used for lag. One below the last but not below the head is taken, so that
 *   a far rootSeq once passed on by a relay (from a hostile upstream it then dropped) pins nothing. Equal seqs are forwarded: an idle root sends the same seq every time, and children
 *   need each beat to stay connected.
 * - Divergence is decided by the upstreams' votes since one last gave this node entries or a snapshot: each refusal
 *   CHAIN_DIVERGED is a vote that the chain diverged, each UPSTREAM_DIVERGED an abstention (a relay that stopped
 *   following and cannot judge this chain). Once every listed upstream has voted or abstained, and at least one voted,
 *   the node stops following altogether until `resync()` (an operator's decision: the node then takes a full
 *   snapshot); until then each refusal is a failure of that upstream, and the next one is tried. Abstentions alone
 *   never stop it: a node behind a diverged relay, on a chain nobody has refused, keeps trying. While stopped, the node
 *   remembers its head (`divergence()`): as a relay it tells a child at that same head CHAIN_DIVERGED, and any other
 *   child UPSTREAM_DIVERGED. Meanwhile the node keeps serving its own children: that is the adapter's Upstream
 *   sessions, which this machine never touches. So does `halt()`, when the adapter could not apply an entry for
 *   damaged data in its own store: every retry would meet the same damage, and a snapshot is what replaces it.
 * - Snapshots are verified against their digest before `snapshotFinish` is emitted; the adapter must keep staged
 *   records invisible until then, and discard them on `snapshotAbort`.
 * - With trusted keys (`trust`, from `--trust-key`), entries and snapshots must also carry the root's signature
 *   (src/trust/trusted-keys.ts says which): the vouched-for prefix of a frame is applied, the rest is refused with
 *   SIGNATURE_MISSING or SIGNATURE_INVALID, told to the upstream in a REFUSE frame, counted, logged, shown in status,
 *   and the upstream is dropped like any other bad upstream (the next one is tried). Without trusted keys the node
 *   trusts its upstream, as before signatures existed.
 * - Withholding: an upstream whose heartbeats say the root is past this node's head must send data (an entry, a
 *   snapshot's frame) within the stale time of the first such heartbeat, or it is dropped as withholding; an honest one
 *   sends the entries within milliseconds of the heartbeat, and a link busy catching up sends data all along. With
 *   trusted keys a heartbeat is progress only if it is the root's, signed, and newer than any taken before
 *   (`takeSigned`), so a relay cannot keep this node by heartbeats of its own or replayed, nor by pinning their rootSeq
 *   below what the root has (the signature no longer verifies). Verifying costs about 150 µs, and a thousand replicas
 *   verifying each heartbeat at once doubled bench:propagation's p99: so a heartbeat is checked only when progress is
 *   due (nothing else came for half the stale time), and the others serve as before (forwarded, lag, the withholding
 *   deadline: a claim that the root is further on can only make this node leave the one who made it). Decision 47.
 *
 * The adapter contract:
 * - `connect` opens a connection and answers `connected` or `closed` with the same connId. Events carrying an old
 *   connId are ignored, so races between a close and late data are harmless.
 * - `apply` must be performed in order and before any later action other than `log`; the machine's head already
 *   includes it. The adapter may hold consecutive ones, also across events, and write them in one transaction
 *   (record 33 in docs/decisions.md). The entries are verified: the node may forward them to its children just
 *   before its write (`Upstream.forwardVerified`, record 30), and does after it (`Upstream.localApplied`).
 * - `snapshotFinish` replaces the node's chain: the adapter installs it and then resets every child session
 *   (`Upstream.chainReset`), since their positions refer to the old log.
 * - `heartbeat` is forwarded to every child session (`Upstream.heartbeat`).
 * - `upstreamSilent` is told to the node: it ends the writes it forwarded to that URL (record 86).
 * - `nextTickMs()` says when `tick` must be called at the latest.
 */
import assert from 'node:assert/strict';
import { ChainError, EntryDecodeError, verifyNext, type ChainHead, type EncodedEntry } from '../log/index.js';
import type { LogLevel } from '../logging/index.js';
import type { SnapshotRecord } from '../store/index.js';
import { ROOT_KEY_KEY, type TrustRefusal, type TrustedKeys } from '../trust/index.js';
import { NODE_ID_BYTES_MAX, PROTOCOL_VERSION, REPLICATION_LIMITS, validateReplicationLimits, type ReplicationLimits } from './limits.js';
import {
  FrameDecoder,
  ProtocolError,
  SnapshotDigest,
  announcedHttpUrl,
  decodeMessage,
  encodeMessage,
  SHARED_NODE_ID_HINT,
  type Heartbeat,
  type Message,
  type RefuseReason,
  type SnapshotChunkMessage,
  type SnapshotProofMessage,
  type WelcomeMessage,
} from './protocol.js';

/**
 * Root epochs (process lifetimes) whose highest beat a replica with trusted keys remembers: a root restarted more often
 * than this within one replica's life lets a relay replay the forgotten epochs' beats once more, at rootSeqs no lower
 * than the highest signed one taken.
 */
const HEARTBEAT_EPOCHS_KEPT = 16;

export type DownstreamAction =
  /** Open a connection to `upstream` (an address from the configured list). */
  | { readonly type: 'connect'; readonly connId: number; readonly upstream: string; readonly upstreamIndex: number }
  | { readonly type: 'send'; readonly connId: number; readonly bytes: Buffer }
  | { readonly type: 'close'; readonly connId: number; readonly reason: string }
  /** Apply these verified entries (in one write transaction, maybe with the next ones), then forward them to children. */
  | { readonly type: 'apply'; readonly entries: readonly EncodedEntry[] }
  /** Start staging a snapshot (forget any partly staged one). */
  | {
      readonly type: 'snapshotBegin';
      readonly seq: number;
      readonly hash: Buffer;
      readonly datasetId: string;
      readonly keyCount: number;
    }
  /**
   * Stage these records. They view `received`, the frame's memory: once staged (LMDB holds copies), give it back with
   * `staged(connId, received)`, so that the connection's decoder joins the next chunk into it.
   */
  | { readonly type: 'snapshotChunk'; readonly records: readonly SnapshotRecord[]; readonly connId: number; readonly received: Buffer }
  /** The staged snapshot is complete and verified: switch to it and adopt `datasetId`. */
  | { readonly type: 'snapshotFinish'; readonly seq: number; readonly hash: Buffer; readonly datasetId: string }
  | { readonly type: 'snapshotAbort'; readonly reason: string }
  /** A heartbeat newer than any seen: forward it to every child. Its path is this node's ancestors. */
  | { readonly type: 'heartbeat'; readonly heartbeat: Heartbeat }
  /** The node stopped following for divergence: record it in the store, so that a restart stays stopped (`divergence` option). */
  | { readonly type: 'diverged'; readonly divergence: Divergence }
  /**
   * The upstream was dropped as stale: nothing came from it for the stale time (a host that vanished, a link or a
   * firewall that drops). Its HTTP API, `httpUrl` from WELCOME, where the node forwards writes, is presumed as silent:
   * what waits for an answer from it can end now rather than at its own timeout (docs/decisions.md, record 86). Not
   * emitted for an upstream that closed, refused or broke the protocol: it is there, and answers or resets on its own.
   */
  | { readonly type: 'upstreamSilent'; readonly httpUrl: string; readonly reason: string }
  | { readonly type: 'log'; readonly level: LogLevel; readonly message: string; readonly fields: Readonly<Record<string, unknown>> };

export type DownstreamPhase =
  /** Not started. */
  | 'idle'
  /** Waiting before the next connection attempt. */
  | 'backoff'
  /** A connection is being opened. */
  | 'connecting'
  /** HELLO sent, waiting for WELCOME or REFUSE. */
  | 'handshake'
  /** Receiving a snapshot (or waiting for SNAPSHOT_BEGIN after WELCOME mode snapshot). */
  | 'snapshot'
  | 'streaming'
  /** The chain diverged from the upstream's: not following until `resync`. */
  | 'diverged'
  /** This node's store holds damaged data that an entry needed (`halt`): not following until `resync`. */
  | 'halted'
  | 'stopped';

export interface DownstreamOptions {
  readonly nodeId: string;
  /** Upstream addresses in order of preference (at least one). */
  readonly upstreams: readonly string[];
  /** '' for a node that never joined a dataset; it then asks for a snapshot. */
  readonly datasetId: string;
  /** The node's stored head. */
  readonly head: ChainHead;
  /** The time of the entry at head (for lag in ms), if known. */
  readonly headTimeMs?: number;
  readonly limits?: ReplicationLimits;
  /** Uniform in [0, 1): jitter for the reconnect backoff, so that the children of a failed node do not reconnect in lockstep. */
  readonly random: () => number;
  /**
   * This node's own HTTP API, sent in each HELLO so that the upstream's status can name it (read at each HELLO: the
   * node learns its address once it listens). Informational; '' or absent when unknown.
   */
  readonly httpUrl?: () => string;
  /** The bearer token this replica presents in HELLO, if any. */
  readonly credential?: string;
  /** The keys whose signatures this node requires (`--trust-key`); undefined: it trusts its upstream. */
  readonly trust?: TrustedKeys;
  /** A resync asked for before a restart and not completed (the store's record): the first HELLO asks for a snapshot. */
  readonly resync?: boolean;
  /**
   * The divergence recorded before a restart (a `diverged` action): the node starts stopped, as it was, until `resync`,
   * and tells its children what it told them before. With `resync`, its remedy under way, the node follows for the
   * snapshot, and its children are still told it until the snapshot installs (`divergence()`).
   */
  readonly divergence?: Divergence;
  /** What the machine this one replaces had counted and taken (`history()`); absent: a new process, nothing yet. */
  readonly history?: DownstreamHistory;
}

/**
 * What a machine made afresh from the store (client.ts, after a storage failure or a halt on damaged data) takes over
 * from the one it replaces, since the process goes on: the counts status and metrics report since start (`mercury
 * resync --wait` compares installs; the gauges that are counters must not fall), the last failure and signature
 * refusal an operator looks for, and the signed heartbeats taken, each taken at most once per process (decision 47).
 */
export interface DownstreamHistory {
  readonly upstreamSwitches: number;
  readonly entriesApplied: number;
  readonly snapshotsInstalled: number;
  readonly lastFailure: string | undefined;
  readonly signatureRefusals: number;
  readonly lastSignatureRefusal: SignatureRefusal | undefined;
  readonly unsignedSnapshotsDeclined: number;
  readonly heartbeatsIgnored: number;
  readonly beatsTaken: ReadonlyMap<string, number>;
  readonly signedRootSeq: number;
}

/**
 * Why this node stopped following because its chain diverged, and the head it held then. The verdict was about that
 * head: a child that holds it shares the chain the verdict condemned; a child at another head may not.
 */
export interface Divergence {
  readonly reason: string;
  readonly head: ChainHead;
}

/** What an upstream answered about this node's chain: a vote that it diverged, or an abstention. */
interface DivergenceVote {
  readonly verdict: 'CHAIN_DIVERGED' | 'UPSTREAM_DIVERGED';
  readonly upstream: string;
  readonly message: string;
}

/** The last time this node refused data for its signature. */
export interface SignatureRefusal extends TrustRefusal {
  readonly upstream: string;
  /** The node's head when it refused (everything up to it was vouched for). */
  readonly seq: number;
}

export interface DownstreamStatus {
  readonly phase: DownstreamPhase;
  readonly upstream: string | undefined;
  readonly upstreamIndex: number | undefined;
  readonly upstreamNodeId: string | undefined;
  /** The current upstream's HTTP API (from WELCOME), where client writes are forwarded; undefined between sessions. */
  readonly upstreamHttpUrl: string | undefined;
  /** Node ids from the root down to the current (or last) upstream. */
  readonly ancestors: readonly string[];
  readonly datasetId: string;
  readonly head: ChainHead;
  /** Entries the root had at its last heartbeat that this node has not applied. */
  readonly lagEntries: number | undefined;
  /** How far behind the root's clock this node's data is: 0 when caught up with the last heartbeat. */
  readonly lagMs: number | undefined;
  readonly lastHeartbeatRootSeq: number | undefined;
  readonly consecutiveFailures: number;
  readonly upstreamSwitches: number;
  readonly entriesApplied: number;
  readonly snapshotsInstalled: number;
  /** A resync was requested and its snapshot is not installed yet (it survives reconnects, upstream switches and restarts). */
  readonly resyncPending: boolean;
  readonly divergedReason: string | undefined;
  /** The head this node held when it stopped following for divergence (it holds it still, until a resync). */
  readonly divergedHead: ChainHead | undefined;
  readonly lastFailure: string | undefined;
  /** Undefined when the node has no trusted keys. */
  readonly trust:
    | {
        readonly configuredKeys: readonly string[];
        readonly learnedKey: string | undefined;
        readonly refusals: number;
        readonly lastRefusal: SignatureRefusal | undefined;
        /** Snapshots an upstream announced without the root's signature (a relay's), declined: not refusals of forged data. */
        readonly unsignedSnapshotsDeclined: number;
        /** Heartbeats checked as progress and refused: unsigned, not signed by a trusted key, or no newer than one taken. */
        readonly heartbeatsIgnored: number;
      }
    | undefined;
  readonly snapshot:
    | { readonly seq: number; readonly keyCount: number; readonly keysReceived: number; readonly bytesReceived: number }
    | undefined;
}

interface Session {
  readonly connId: number;
  readonly index: number;
  readonly address: string;
  readonly startedMs: number;
  readonly decoder: FrameDecoder;
  welcome: WelcomeMessage | undefined;
  lastProgressMs: number;
  /** rootSeq of the last heartbeat taken in this session: heartbeats are ordered by seq, never by root time. */
  lastHeartbeatRootSeq: number | undefined;
  /**
   * When a heartbeat taken first said the root is past this node's head, since data (an entry, a snapshot's frame)
   * last came: undefined while none has. See "Withholding" in the header.
   */
  behindSinceMs: number | undefined;
  /** When a session on a fallback upstream tries the first one again (Infinity on the first). */
  preferredRetryAtMs: number;
  /** A return to the first upstream from a healthy fallback: its handshake has `preferredHandshakeTimeoutMs`. */
  readonly returning: boolean;
  receivedBytes: number;
  ackedBytes: number;
  ackedSeq: number;
  lastAckMs: number;
}

interface IncomingSnapshot {
  readonly seq: number;
  readonly hash: Buffer;
  readonly keyCount: number;
  /** The root key the snapshot's key space names (a rotation before it), trusted once the snapshot is. */
  rootKey: Buffer | undefined;
  readonly digest: SnapshotDigest;
  /** A copy (the records' memory is given back to the decoder once they are staged). */
  lastKey: Buffer | undefined;
  keysReceived: number;
  bytesReceived: number;
  /** Record bytes (as the digest covers them) since the last verified SNAPSHOT_PROOF, or the start. */
  bytesSinceProof: number;
}

/**
 * Reconnect delay after `failures` consecutive failures: min * 2^(failures-1), capped at max, jittered down to half,
 * never below min. 0 before any failure.
 */
export function backoffDelayMs(failures: number, limits: ReplicationLimits, random: () => number): number {
  if (failures <= 0) return 0;
  const base = Math.min(limits.reconnectBackoffMsMax, limits.reconnectBackoffMsMin * 2 ** Math.min(failures - 1, 30));
  return Math.max(limits.reconnectBackoffMsMin, Math.floor(base * (0.5 + 0.5 * random())));
}

export class Downstream {
  readonly nodeId: string;
  private readonly upstreams: readonly string[];
  private readonly limits: ReplicationLimits;
  private readonly random: () => number;
  private readonly httpUrl: () => string;
  private readonly credential: string | undefined;
  private phase: DownstreamPhase = 'idle';
  private datasetId: string;
  private head: ChainHead;
  private headTimeMs: number | undefined;
  private ancestors: readonly string[] = [];
  private session: Session | undefined;
  private snapshot: IncomingSnapshot | undefined;
  /** The first upstream announced a snapshot without the root's signature (a relay's), since the last install. */
  private preferredSentUnsignedSnapshot = false;
  private lastConnId = 0;
  private nextIndex = 0;
  /**
   * How long a session on a fallback streams before it returns to the first upstream: `preferredUpstreamRetryMs`,
   * doubled by each return the first one did not welcome (up to `preferredUpstreamRetryMsMax`), reset by a welcome.
   */
  private preferredRetryMs: number;
  private returningToPreferred = false;
  private nextAttemptMs = 0;
  private failures = 0;
  private resyncRequested = false;
  private currentDivergence: Divergence | undefined;
  /**
   * The divergence a resync is remedying: the node follows again, for its snapshot, but holds the condemned chain until
   * that installs, so its children are judged by it meanwhile (`divergence()`). Cleared by the install.
   */
  private resyncedDivergence: Divergence | undefined;
  /**
   * What each upstream (by index) answered about this node's chain since one last gave it entries or a snapshot:
   * CHAIN_DIVERGED (a vote) or UPSTREAM_DIVERGED (an abstention). An upstream's refusal is its word alone (a relay may
   * lie, and a refusal carries no signature): the replica stops only when every upstream it lists has voted or
   * abstained, at least one voted, and otherwise fails over like any failure. A relay that stopped following abstains
   * for a child at any head but its own: that child may be behind the fork, on a chain that the root would serve, and
   * counting the relay's refusal as a vote stopped such a child whose only upstream was the relay. A WELCOME does not
   * clear them: a relay on the same forked chain welcomes this node and has nothing to give it.
   */
  private readonly divergedVotes = new Map<number, DivergenceVote>();
  private lastFailure: string | undefined;
  /** The last heartbeat taken (forwarded, and the source of the reported lag). */
  private lastHeartbeat: Heartbeat | undefined;
  /** When a heartbeat was last passed on to the children (monotonic ms). */
  private forwardedHeartbeatMs = -Infinity;
  /** With trusted keys: the highest beat taken in each root epoch (HEARTBEAT_EPOCHS_KEPT at most), and the highest rootSeq. */
  private readonly beatsTaken = new Map<string, number>();
  private signedRootSeq = 0;
  /** With trusted keys: heartbeats checked as progress and refused (unsigned, not signed by a trusted key, or replayed). */
  private heartbeatsIgnored = 0;
  private upstreamSwitches = 0;
  private entriesApplied = 0;
  private snapshotsInstalled = 0;
  private readonly trust: TrustedKeys | undefined;
  private signatureRefusals = 0;
  /** With trusted keys: snapshots an upstream announced unsigned (a relay's), declined before they were sent. */
  private unsignedSnapshotsDeclined = 0;
  private lastSignatureRefusal: SignatureRefusal | undefined;

  constructor(options: DownstreamOptions) {
    assert.ok(options.upstreams.length > 0, 'a replica needs at least one upstream');
    assert.ok(options.nodeId.length > 0);
    this.nodeId = options.nodeId;
    this.upstreams = [...options.upstreams];
    this.limits = validateReplicationLimits(options.limits ?? REPLICATION_LIMITS);
    this.preferredRetryMs = this.limits.preferredUpstreamRetryMs;
    this.random = options.random;
    this.httpUrl = options.httpUrl ?? (() => '');
    this.credential = options.credential;
    this.datasetId = options.datasetId;
    this.head = { seq: options.head.seq, hash: Buffer.from(options.head.hash) };
    this.headTimeMs = options.headTimeMs;
    this.trust = options.trust;
    this.resyncRequested = options.resync === true;
    if (options.divergence !== undefined) {
      const divergence = { reason: options.divergence.reason, head: { seq: options.divergence.head.seq, hash: Buffer.from(options.divergence.head.hash) } };
      if (this.resyncRequested) this.resyncedDivergence = divergence;
      else this.currentDivergence = divergence;
    }
    const history = options.history;
    if (history !== undefined) {
      this.upstreamSwitches = history.upstreamSwitches;
      this.entriesApplied = history.entriesApplied;
      this.snapshotsInstalled = history.snapshotsInstalled;
      this.lastFailure = history.lastFailure;
      this.signatureRefusals = history.signatureRefusals;
      this.lastSignatureRefusal = history.lastSignatureRefusal;
      this.unsignedSnapshotsDeclined = history.unsignedSnapshotsDeclined;
      this.heartbeatsIgnored = history.heartbeatsIgnored;
      for (const [epoch, beat] of history.beatsTaken) this.beatsTaken.set(epoch, beat);
      this.signedRootSeq = history.signedRootSeq;
    }
  }

  /** What a machine that replaces this one in the same process takes over (see DownstreamHistory). */
  history(): DownstreamHistory {
    return {
      upstreamSwitches: this.upstreamSwitches,
      entriesApplied: this.entriesApplied,
      snapshotsInstalled: this.snapshotsInstalled,
      lastFailure: this.lastFailure,
      signatureRefusals: this.signatureRefusals,
      lastSignatureRefusal: this.lastSignatureRefusal,
      unsignedSnapshotsDeclined: this.unsignedSnapshotsDeclined,
      heartbeatsIgnored: this.heartbeatsIgnored,
      beatsTaken: new Map(this.beatsTaken),
      signedRootSeq: this.signedRootSeq,
    };
  }

  /** The URL for HELLO: a str8, so a longer one (an odd --advertise-url) is left out rather than breaking the handshake. */
  private advertisedHttpUrl(): string {
    const url = this.httpUrl();
    return Buffer.byteLength(url) <= NODE_ID_BYTES_MAX ? url : '';
  }

  /** Starts following the first upstream; or, when the node had stopped for divergence before a restart, stays stopped. */
  start(nowMs: number): DownstreamAction[] {
    assert.equal(this.phase, 'idle', 'start() called twice');
    const divergence = this.currentDivergence;
    if (divergence === undefined) return this.connect(nowMs);
    this.phase = 'diverged';
    this.lastFailure = divergence.reason;
    return [
      {
        type: 'log',
        level: 'error',
        message: 'this replica stopped following before it restarted, its chain diverged from its upstreams\': not following until an operator resyncs it (mercury resync)',
        fields: { seq: divergence.head.seq, hash: divergence.head.hash.toString('hex'), reason: divergence.reason },
      },
    ];
  }

  /** The connection `connId` is open. */
  connected(nowMs: number, connId: number): DownstreamAction[] {
    const session = this.current(connId);
    if (session === undefined || this.phase !== 'connecting') return [];
    this.phase = 'handshake';
    const hello = encodeMessage({
      type: 'hello',
      protocolVersion: PROTOCOL_VERSION,
      resync: this.resyncRequested,
      datasetId: this.datasetId,
      nodeId: this.nodeId,
      path: this.ancestors,
      head: this.head,
      httpUrl: this.advertisedHttpUrl(),
      ...(this.credential === undefined ? {} : { credential: this.credential }),
    });
    return [{ type: 'send', connId, bytes: hello }];
  }

  /**
   * The records of a `snapshotChunk` action are staged and nothing views `received` any more: its memory goes back to
   * the connection's decoder, if the connection is still this one.
   */
  staged(connId: number, received: Buffer): void {
    this.current(connId)?.decoder.release(received);
  }

  /** Bytes arrived on `connId`, split anywhere. */
  receive(nowMs: number, connId: number, chunk: Buffer): DownstreamAction[] {
    const session = this.current(connId);
    if (session === undefined) return [];
    const actions: DownstreamAction[] = [];
    if (this.phase === 'connecting') return this.fail(nowMs, 'upstream spoke before HELLO', actions);
    let frames;
    try {
      frames = session.decoder.push(chunk);
    } catch (error) {
      return this.failProtocol(nowMs, error, actions);
    }
    for (const frame of frames) {
      session.receivedBytes += frame.bytes;
      let message: Message;
      try {
        message = decodeMessage(frame);
      } catch (error) {
        return this.failProtocol(nowMs, error, actions);
      }
      this.handle(nowMs, session, message, actions);
      if (this.session !== session) return actions;
    }
    if (
      session.welcome !== undefined &&
      (session.receivedBytes - session.ackedBytes >= this.limits.ackEveryBytes || this.head.seq - session.ackedSeq >= this.limits.ackEveryEntries)
    )
      this.ack(nowMs, session, actions);
    return actions;
  }

  /** The connection `connId` closed, or could not be opened. */
  closed(nowMs: number, connId: number, reason = 'connection closed'): DownstreamAction[] {
    if (this.current(connId) === undefined) return [];
    return this.fail(nowMs, reason, [], { peerClosed: true });
  }

  /** Time passed: reconnect after a backoff, drop a stale upstream, send a keep-alive ACK. */
  tick(nowMs: number): DownstreamAction[] {
    const actions: DownstreamAction[] = [];
    if (this.phase === 'backoff' && nowMs >= this.nextAttemptMs) return this.connect(nowMs);
    const session = this.session;
    if (session === undefined) return actions;
    if (session.welcome === undefined) {
      const timeoutMs = this.handshakeTimeoutMs(session);
      if (nowMs - session.startedMs >= timeoutMs) return this.fail(nowMs, `no answer to the handshake within ${timeoutMs} ms`, actions);
      return actions;
    }
    const staleMs = this.staleAfterMs();
    if (nowMs - session.lastProgressMs >= staleMs) {
      const reason = `upstream stale: no progress for ${staleMs} ms`;
      this.fail(nowMs, reason, actions);
      const httpUrl = announcedHttpUrl(session.welcome.httpUrl);
      if (httpUrl !== undefined) actions.push({ type: 'upstreamSilent', httpUrl, reason });
      return actions;
    }
    if (session.behindSinceMs !== undefined && nowMs - session.behindSinceMs >= staleMs)
      return this.fail(
        nowMs,
        `upstream withholding: its heartbeats say the root is at seq ${session.lastHeartbeatRootSeq}, this node is at ${this.head.seq}, and nothing more came for ${staleMs} ms`,
        actions,
      );
    // The session has proven the upstream: the failures before it are no longer consecutive. Status said so only at the
    // next failure, so a replica streaming for hours still showed the failures that preceded it.
    if (this.failures > 0 && this.provenSession(session, nowMs)) this.failures = 0;
    if (this.shouldReturnToPreferred(session, nowMs)) return this.returnToPreferred(nowMs, session, actions);
    // The keep-alive ACK has a timer of its own, at whatever phase the session began: sent on each heartbeat instead (one
    // wake-up a second less, idle replica CPU -20%), every replica's ACK joined the heartbeat's burst through the tree,
    // and bench:propagation's p99 to 1,000 replicas rose from 89-106 to 123-129 ms (docs/performance.md).
    if (nowMs - session.lastAckMs >= this.limits.ackIntervalMs) this.ack(nowMs, session, actions);
    return actions;
  }

  /** A return to the preferred upstream gives up sooner than a first connection (see `preferredHandshakeTimeoutMs`). */
  private handshakeTimeoutMs(session: Session): number {
    return session.returning ? this.limits.preferredHandshakeTimeoutMs : this.limits.handshakeTimeoutMs;
  }

  /** A session welcomed `backoffResetMs` ago: the backoff starts from the minimum again after it. */
  private provenSession(session: Session, nowMs: number): boolean {
    return session.welcome !== undefined && nowMs - session.startedMs >= this.limits.backoffResetMs;
  }

  private shouldReturnToPreferred(session: Session, nowMs: number): boolean {
    return nowMs >= this.preferredRetryAtMs(session);
  }

  /** When a session on a fallback upstream tries the first one again; Infinity on the first, or while not streaming. */
  private preferredRetryAtMs(session: Session): number {
    return this.phase === 'streaming' ? session.preferredRetryAtMs : Infinity;
  }

  /** Leaves a healthy fallback upstream for the first one in the list (not a failure: no backoff grows). */
  private returnToPreferred(nowMs: number, session: Session, actions: DownstreamAction[]): DownstreamAction[] {
    this.endSession(session, 'returning to the preferred upstream', actions, false);
    this.failures = 0;
    this.nextIndex = 0;
    actions.push({ type: 'log', level: 'info', message: 'returning to the preferred upstream', fields: { from: session.address, to: this.upstreams[0] } });
    this.returningToPreferred = true;
    actions.push(...this.connect(nowMs));
    return actions;
  }

  /** The latest time at which `tick` must be called, or undefined if no deadline is pending. */
  nextTickMs(): number | undefined {
    if (this.phase === 'backoff') return this.nextAttemptMs;
    const session = this.session;
    if (session === undefined) return undefined;
    if (session.welcome === undefined) return session.startedMs + this.handshakeTimeoutMs(session);
    return Math.min(
      this.failures > 0 ? session.startedMs + this.limits.backoffResetMs : Infinity,
      session.lastProgressMs + this.staleAfterMs(),
      (session.behindSinceMs ?? Infinity) + this.staleAfterMs(),
      session.lastAckMs + this.limits.ackIntervalMs,
      this.preferredRetryAtMs(session),
    );
  }

  /**
   * Operator: fetch a full snapshot, replacing the local chain (from the current upstream if connected, else from the
   * next one, at once). The only way out of `diverged`; valid in any phase, also before `start`. While one is pending
   * a repeat changes nothing: restarting would make the upstream begin another full snapshot each time (the node
   * refuses repeats before they get here, see `resyncPending`).
   */
  resync(nowMs: number): DownstreamAction[] {
    if (this.phase === 'stopped' || this.resyncRequested) return [];
    this.resyncRequested = true;
    // Stopped no more, but the chain it condemned is still this node's until the snapshot replaces it: a relay that
    // welcomed children meanwhile gave a joining one a snapshot of the fork, for as long as its upstream was away.
    this.resyncedDivergence = this.currentDivergence ?? this.resyncedDivergence;
    this.currentDivergence = undefined;
    this.divergedVotes.clear();
    this.failures = 0;
    const actions: DownstreamAction[] = [{ type: 'log', level: 'warn', message: 'resync requested: fetching a full snapshot', fields: { seq: this.head.seq } }];
    // Before start() the flag is enough: the first HELLO will ask for the snapshot.
    if (this.phase === 'idle') return actions;
    if (this.session !== undefined) {
      const index = this.session.index;
      this.endSession(this.session, 'operator requested a resync', actions, false);
      this.nextIndex = index;
    }
    return [...actions, ...this.connect(nowMs)];
  }

  /**
   * The adapter could not apply an entry: its store met damaged data (a put reads the key's record for its createSeq
   * and version). Not following until `resync()`, as after a divergence; `reason` is shown as `lastFailure`. The
   * adapter calls this on a machine made afresh from its store, since the old one counted the entries as applied.
   */
  halt(_nowMs: number, reason: string): DownstreamAction[] {
    if (this.phase === 'stopped') return [];
    const actions: DownstreamAction[] = [];
    if (this.session !== undefined) this.endSession(this.session, reason, actions, false);
    this.phase = 'halted';
    this.lastFailure = reason;
    // A resync pending (a machine made from a store that records one) would refuse the operator's next one, the way out.
    this.resyncRequested = false;
    actions.push({
      type: 'log',
      level: 'error',
      message: 'replication halted: this node\'s store holds damaged data an entry needs; resync it (mercury resync) or restore its data directory',
      fields: { seq: this.head.seq, reason },
    });
    return actions;
  }

  /** Stops following (node shutdown). */
  stop(_nowMs: number): DownstreamAction[] {
    const actions: DownstreamAction[] = [];
    if (this.session !== undefined) this.endSession(this.session, 'node stopping', actions, false);
    this.phase = 'stopped';
    return actions;
  }

  status(): DownstreamStatus {
    const session = this.session;
    const lastRootSeq = this.lastHeartbeat?.rootSeq;
    const lagEntries = lastRootSeq === undefined ? undefined : Math.max(0, lastRootSeq - this.head.seq);
    let lagMs: number | undefined;
    if (lagEntries === 0) lagMs = 0;
    // Wall times of the root on both sides (entry time, heartbeat time): a reported figure, never a deadline.
    else if (lagEntries !== undefined && this.headTimeMs !== undefined) lagMs = Math.max(0, this.lastHeartbeat!.rootTimeMs - this.headTimeMs);
    const snapshot = this.snapshot;
    return {
      phase: this.phase,
      upstream: session?.address,
      upstreamIndex: session?.index,
      upstreamNodeId: session?.welcome?.nodeId,
      upstreamHttpUrl: session?.welcome === undefined ? undefined : announcedHttpUrl(session.welcome.httpUrl),
      ancestors: this.ancestors,
      datasetId: this.datasetId,
      head: this.head,
      lagEntries,
      lagMs,
      lastHeartbeatRootSeq: lastRootSeq,
      consecutiveFailures: this.failures,
      upstreamSwitches: this.upstreamSwitches,
      entriesApplied: this.entriesApplied,
      snapshotsInstalled: this.snapshotsInstalled,
      resyncPending: this.resyncRequested,
      divergedReason: this.currentDivergence?.reason,
      divergedHead: this.currentDivergence?.head,
      lastFailure: this.lastFailure,
      trust:
        this.trust === undefined
          ? undefined
          : {
              configuredKeys: this.trust.keyIds().configured,
              learnedKey: this.trust.keyIds().learned,
              refusals: this.signatureRefusals,
              lastRefusal: this.lastSignatureRefusal,
              unsignedSnapshotsDeclined: this.unsignedSnapshotsDeclined,
              heartbeatsIgnored: this.heartbeatsIgnored,
            },
      snapshot:
        snapshot === undefined
          ? undefined
          : { seq: snapshot.seq, keyCount: snapshot.keyCount, keysReceived: snapshot.keysReceived, bytesReceived: snapshot.bytesReceived },
    };
  }

  /**
   * Why this node stopped following for divergence, and at which head: what its children are told. Undefined before,
   * and again once a resync installed its snapshot; while the resync fetches it, the node still holds that chain.
   */
  divergence(): Divergence | undefined {
    return this.currentDivergence ?? this.resyncedDivergence;
  }

  /** The connection the machine currently uses (connecting or connected), if any. */
  get currentConnId(): number | undefined {
    return this.session?.connId;
  }

  /** The node's ancestors as last learned (root first): the Upstream sessions use them to refuse loops. */
  currentAncestors(): readonly string[] {
    return this.ancestors;
  }

  // -------------------------------------------------------------------------------------------------------------

  private current(connId: number): Session | undefined {
    return this.session !== undefined && this.session.connId === connId ? this.session : undefined;
  }

  private staleAfterMs(): number {
    return this.limits.upstreamStaleMs + this.ancestors.length * this.limits.upstreamStaleHopMs;
  }

  private connect(nowMs: number): DownstreamAction[] {
    assert.equal(this.session, undefined);
    const index = this.nextIndex % this.upstreams.length;
    const address = this.upstreams[index]!;
    const connId = ++this.lastConnId;
    this.session = {
      connId,
      index,
      address,
      startedMs: nowMs,
      decoder: new FrameDecoder(this.limits.frameBytesMax),
      welcome: undefined,
      lastProgressMs: nowMs,
      lastHeartbeatRootSeq: undefined,
      behindSinceMs: undefined,
      preferredRetryAtMs: index === 0 ? Infinity : nowMs + this.preferredRetryMs,
      returning: this.returningToPreferred,
      receivedBytes: 0,
      ackedBytes: 0,
      ackedSeq: this.head.seq,
      lastAckMs: nowMs,
    };
    this.returningToPreferred = false;
    this.phase = 'connecting';
    return [{ type: 'connect', connId, upstream: address, upstreamIndex: index }];
  }

  private handle(nowMs: number, session: Session, message: Message, actions: DownstreamAction[]): void {
    if (message.type === 'refuse') return this.refused(nowMs, message.reason, message.message, actions);
    if (this.phase === 'handshake') {
      if (message.type !== 'welcome') return this.unexpected(nowMs, message, actions);
      return this.welcomed(nowMs, session, message, actions);
    }
    switch (message.type) {
      case 'heartbeat':
        return this.heartbeat(nowMs, session, message, actions);
      case 'entries':
        if (this.phase !== 'streaming') return this.unexpected(nowMs, message, actions);
        return this.entries(nowMs, session, message.records, actions);
      case 'snapshotBegin':
        if (this.snapshot !== undefined) return this.unexpected(nowMs, message, actions);
        if (this.trust !== undefined && !message.signed) return this.declineUnsignedSnapshot(nowMs, session, message.seq, actions);
        return this.snapshotBegin(nowMs, session, message.seq, message.hash, message.keyCount, actions);
      case 'snapshotChunk':
        if (this.snapshot === undefined) return this.unexpected(nowMs, message, actions);
        return this.snapshotChunk(nowMs, session, this.snapshot, message, actions);
      case 'snapshotProof':
        if (this.snapshot === undefined) return this.unexpected(nowMs, message, actions);
        return this.snapshotProof(nowMs, session, this.snapshot, message, actions);
      case 'snapshotEnd':
        if (this.snapshot === undefined) return this.unexpected(nowMs, message, actions);
        return this.snapshotEnd(nowMs, session, this.snapshot, message.digest, message.signature, actions);
      default:
        return this.unexpected(nowMs, message, actions);
    }
  }

  private welcomed(nowMs: number, session: Session, welcome: WelcomeMessage, actions: DownstreamAction[]): void {
    if (welcome.nodeId === this.nodeId) return void this.fail(nowMs, `SELF: the upstream has this node's id: ${SHARED_NODE_ID_HINT}`, actions);
    if (welcome.path.includes(this.nodeId)) return void this.fail(nowMs, `LOOP: this node is an ancestor of its upstream (${welcome.path.join(' > ')})`, actions);
    if (welcome.path[welcome.path.length - 1] !== welcome.nodeId) return void this.fail(nowMs, 'WELCOME path does not end at the upstream', actions);
    if (this.datasetId !== '' && welcome.datasetId !== this.datasetId)
      return void this.fail(nowMs, `DATASET_MISMATCH: upstream holds dataset ${welcome.datasetId}, this node ${this.datasetId}`, actions);
    if (welcome.mode === 'stream') {
      if (this.datasetId === '' || this.resyncRequested) return void this.fail(nowMs, 'upstream offered a stream where a snapshot was needed', actions);
      if (welcome.fromSeq !== this.head.seq + 1) return void this.fail(nowMs, `upstream offered a stream from ${welcome.fromSeq}, head is ${this.head.seq}`, actions);
    }
    session.welcome = welcome;
    if (session.index === 0) this.preferredRetryMs = this.limits.preferredUpstreamRetryMs;
    this.dataArrived(nowMs, session);
    session.lastAckMs = nowMs;
    this.ancestors = welcome.path;
    this.phase = welcome.mode === 'stream' ? 'streaming' : 'snapshot';
    this.upstreamSwitches++;
    actions.push({
      type: 'log',
      level: 'info',
      message: 'following upstream',
      fields: { upstream: session.address, upstreamNodeId: welcome.nodeId, mode: welcome.mode, seq: this.head.seq, upstreamSeq: welcome.head.seq },
    });
  }

  private heartbeat(nowMs: number, session: Session, heartbeat: Heartbeat, actions: DownstreamAction[]): void {
    if (heartbeat.path.includes(this.nodeId)) return void this.fail(nowMs, `LOOP: heartbeat passed through this node (${heartbeat.path.join(' > ')})`, actions);
    if (heartbeat.path[heartbeat.path.length - 1] !== session.welcome?.nodeId) return void this.fail(nowMs, 'heartbeat path does not end at the upstream', actions);
    this.ancestors = heartbeat.path;
    // A heartbeat proves the upstream alive, whatever its times say (a cycle never gets here: the heartbeat that went
    // round would carry this node's id, refused above); with trusted keys, only a signed one checked when due.
    if (this.trust === undefined || this.provesProgress(nowMs, session, heartbeat)) session.lastProgressMs = nowMs;
    // Old news is a heartbeat below the session's last that this node's data also shows to be behind. One at or past the
    // head is taken though lower: the last may have been a hostile heartbeat that an honest relay passed on before it
    // dropped its upstream, and held as the mark it would pin the lag (and stop the forwarding) for the whole session.
    if (session.lastHeartbeatRootSeq !== undefined && heartbeat.rootSeq < session.lastHeartbeatRootSeq && heartbeat.rootSeq < this.head.seq) return;
    session.lastHeartbeatRootSeq = heartbeat.rootSeq;
    // The root is past this node: the upstream has entries to send, and a deadline to send some (see "Withholding").
    if (heartbeat.rootSeq > this.head.seq) session.behindSinceMs ??= nowMs;
    const { rootSeq, rootTimeMs, path, proof } = heartbeat;
    this.lastHeartbeat = proof === undefined ? { rootSeq, rootTimeMs, path } : { rootSeq, rootTimeMs, path, proof };
    // Forwarded to the children at most twice per heartbeat interval: the root sends one a second, and an upstream that
    // floods them (whatever seqs they claim) must not have this node multiply the flood by its children.
    if (nowMs - this.forwardedHeartbeatMs < this.limits.heartbeatIntervalMs / 2) return;
    this.forwardedHeartbeatMs = nowMs;
    actions.push({ type: 'heartbeat', heartbeat: this.lastHeartbeat });
  }

  /**
   * With trusted keys: whether a heartbeat counts as progress. Checked (`takeSigned`) only when progress is due, when
   * nothing else came for half the stale time: a busy link verifies none, an idle one one in a few (see "Withholding").
   */
  private provesProgress(nowMs: number, session: Session, heartbeat: Heartbeat): boolean {
    if (nowMs - session.lastProgressMs < this.staleAfterMs() / 2) return false;
    if (this.takeSigned(heartbeat)) return true;
    this.heartbeatsIgnored++;
    return false;
  }

  /**
   * Whether a heartbeat is the root's, signed by a trusted key, and newer than any this node took: a later beat of an
   * epoch it knows, or a new epoch (a restarted root) at a rootSeq no lower than any signed one it took. A relay can
   * only replay heartbeats the root made, each at most once per replica process, so it cannot keep a replica by
   * heartbeats alone, nor claim the root is where it is not (decision record 47).
   */
  private takeSigned(heartbeat: Heartbeat): boolean {
    const proof = heartbeat.proof;
    if (proof === undefined) return false;
    if (!this.trust!.checkHeartbeat({ epoch: proof.epoch, beat: proof.beat, rootSeq: heartbeat.rootSeq, rootTimeMs: heartbeat.rootTimeMs }, proof.signature)) return false;
    const epoch = proof.epoch.toString('hex');
    const lastBeat = this.beatsTaken.get(epoch);
    if (lastBeat === undefined ? heartbeat.rootSeq < this.signedRootSeq : proof.beat <= lastBeat) return false;
    // Most recent last, so that the oldest epoch is the first one dropped.
    this.beatsTaken.delete(epoch);
    this.beatsTaken.set(epoch, proof.beat);
    if (this.beatsTaken.size > HEARTBEAT_EPOCHS_KEPT) this.beatsTaken.delete(this.beatsTaken.keys().next().value!);
    this.signedRootSeq = Math.max(this.signedRootSeq, heartbeat.rootSeq);
    return true;
  }

  /** An entry, a snapshot's frame or a WELCOME came: progress, and whatever heartbeats said the root had may follow. */
  private dataArrived(nowMs: number, session: Session): void {
    session.lastProgressMs = nowMs;
    session.behindSinceMs = undefined;
  }

  private entries(nowMs: number, session: Session, records: readonly Buffer[], actions: DownstreamAction[]): void {
    const verified: EncodedEntry[] = [];
    let head = this.head;
    let failure: string | undefined;
    for (const record of records) {
      try {
        const entry = verifyNext(head, record);
        verified.push({ entry, record });
        head = entry;
      } catch (error) {
        if (!(error instanceof ChainError || error instanceof EntryDecodeError)) throw error;
        failure = `entry after seq ${head.seq} failed verification: ${error.message}`;
        break;
      }
    }
    if (this.trust !== undefined && verified.length > 0) {
      const verdict = this.trust.checkBatch(verified.map(({ entry }) => entry));
      if (verdict.refusal !== undefined) {
        verified.length = verdict.accepted;
        this.applyVerified(nowMs, session, verified, actions);
        if (verdict.learnedKey !== undefined) this.trust.learn(verdict.learnedKey);
        return this.refuseData(nowMs, session, verdict.refusal, actions);
      }
      if (verdict.learnedKey !== undefined) this.trust.learn(verdict.learnedKey);
    }
    this.applyVerified(nowMs, session, verified, actions);
    if (failure !== undefined) this.fail(nowMs, failure, actions);
  }

  private applyVerified(nowMs: number, session: Session, verified: EncodedEntry[], actions: DownstreamAction[]): void {
    if (verified.length > 0) {
      const last = verified[verified.length - 1]!.entry;
      // A copy: the entry's hash points into the frame, which would otherwise stay alive as long as the head.
      this.head = { seq: last.seq, hash: Buffer.from(last.hash) };
      this.headTimeMs = last.timeMs;
      this.entriesApplied += verified.length;
      this.dataArrived(nowMs, session);
      this.divergedVotes.clear();
      actions.push({ type: 'apply', entries: verified });
    }
  }

  /**
   * Refuses data whose signature does not hold: tells the upstream why (REFUSE, so that its operator learns it too),
   * records it for status and metrics, and drops the upstream like any other bad one.
   */
  private refuseData(nowMs: number, session: Session, refusal: TrustRefusal, actions: DownstreamAction[]): void {
    this.signatureRefusals++;
    this.lastSignatureRefusal = { ...refusal, upstream: session.address, seq: this.head.seq };
    actions.push({ type: 'send', connId: session.connId, bytes: encodeMessage({ type: 'refuse', reason: refusal.code, message: refusal.message }) });
    actions.push({
      type: 'log',
      level: 'error',
      message: 'refused data not signed by a trusted key',
      fields: { code: refusal.code, upstream: session.address, upstreamNodeId: session.welcome?.nodeId, seq: this.head.seq, error: refusal.message },
    });
    this.fail(nowMs, `${refusal.code}: ${refusal.message}`, actions);
  }

  /**
   * An upstream announced a snapshot that will not carry the root's signature: a relay's, since only the root can sign
   * one (record 25). Declined before a byte of it arrives, and the replica takes its snapshot from its next upstream;
   * the upstream is told why (REFUSE `SIGNATURE_MISSING`). Not counted nor logged as a refusal of forged data: an honest
   * relay does this whenever a verifying child needs a snapshot, so those signals, which an operator alerts on, would
   * fire in every correctly deployed tree (soak, 2026-12-07). A hostile relay gains nothing by it that it could not
   * have by closing the connection (record 65).
   */
  private declineUnsignedSnapshot(nowMs: number, session: Session, seq: number, actions: DownstreamAction[]): void {
    this.unsignedSnapshotsDeclined++;
    if (session.index === 0) this.preferredSentUnsignedSnapshot = true;
    const message = `snapshot at seq ${seq} will not be signed: the upstream is not the root, and only the root can sign a snapshot`;
    actions.push({ type: 'send', connId: session.connId, bytes: encodeMessage({ type: 'refuse', reason: 'SIGNATURE_MISSING', message }) });
    actions.push({
      type: 'log',
      level: 'info',
      message: 'declined an unsigned snapshot: only the root can sign one, taking it from the next upstream',
      fields: { upstream: session.address, upstreamNodeId: session.welcome?.nodeId, seq },
    });
    this.fail(nowMs, `SIGNATURE_MISSING: ${message}`, actions);
  }

  private snapshotBegin(nowMs: number, session: Session, seq: number, hash: Buffer, keyCount: number, actions: DownstreamAction[]): void {
    // Outside a resync or a first join, a snapshot may only move the node forward: going back would lose applied data
    // that its children may already hold.
    if (!this.resyncRequested && this.datasetId !== '' && seq <= this.head.seq)
      return void this.fail(nowMs, `upstream sent a snapshot at seq ${seq}, not past the head ${this.head.seq}`, actions);
    const datasetId = session.welcome!.datasetId;
    this.snapshot = {
      seq,
      hash: Buffer.from(hash),
      keyCount,
      rootKey: undefined,
      digest: new SnapshotDigest(),
      lastKey: undefined,
      keysReceived: 0,
      bytesReceived: 0,
      bytesSinceProof: 0,
    };
    this.phase = 'snapshot';
    this.dataArrived(nowMs, session);
    actions.push({ type: 'snapshotBegin', seq, hash: this.snapshot.hash, datasetId, keyCount });
    actions.push({ type: 'log', level: 'info', message: 'receiving snapshot', fields: { upstream: session.address, seq, keyCount } });
  }

  private snapshotChunk(nowMs: number, session: Session, snapshot: IncomingSnapshot, chunk: SnapshotChunkMessage, actions: DownstreamAction[]): void {
    const records = chunk.records;
    assert.ok(chunk.encodedRecords !== undefined, 'a received SNAPSHOT_CHUNK comes from decodeMessage');
    // A signing root sends a proof once a snapshot's records since the last one reach snapshotProofBytes: a chunk after
    // that many without one is from an upstream that claimed a signature it cannot make (a relay streaming records
    // that may never end). Refused before it is staged.
    if (this.trust !== undefined && snapshot.bytesSinceProof >= this.limits.snapshotProofBytes)
      return this.refuseData(
        nowMs,
        session,
        {
          code: 'SIGNATURE_MISSING',
          message: `snapshot at seq ${snapshot.seq} claims the root's signature but sent ${snapshot.bytesSinceProof} bytes of records without a signed proof (the root sends one every ${this.limits.snapshotProofBytes})`,
        },
        actions,
      );
    snapshot.bytesSinceProof += chunk.encodedRecords.length;
    let previous = snapshot.lastKey;
    for (const record of records) {
      if (previous !== undefined && Buffer.compare(previous, record.key) >= 0) return void this.fail(nowMs, 'snapshot keys are not strictly ascending', actions);
      if (record.modSeq > snapshot.seq) return void this.fail(nowMs, `snapshot record modified at ${record.modSeq}, after the snapshot seq ${snapshot.seq}`, actions);
      previous = record.key;
      if (record.key.length === ROOT_KEY_KEY.length && record.key.equals(ROOT_KEY_KEY)) snapshot.rootKey = Buffer.from(record.value);
      snapshot.keysReceived++;
      snapshot.bytesReceived += record.key.length + record.value.length;
    }
    snapshot.lastKey = previous === undefined ? undefined : Buffer.from(previous);
    if (snapshot.keysReceived > snapshot.keyCount) return void this.fail(nowMs, `snapshot has more than the announced ${snapshot.keyCount} keys`, actions);
    snapshot.digest.updateEncoded(chunk.encodedRecords);
    this.dataArrived(nowMs, session);
    actions.push({ type: 'snapshotChunk', records, connId: session.connId, received: chunk.encodedRecords });
  }

  /**
   * A SNAPSHOT_PROOF: the root's signature over the records so far. A replica with trusted keys checks that it covers
   * exactly what arrived (count and digest) and is the root's; without them the upstream is trusted, and it is ignored.
   */
  private snapshotProof(nowMs: number, session: Session, snapshot: IncomingSnapshot, proof: SnapshotProofMessage, actions: DownstreamAction[]): void {
    if (this.trust === undefined) return;
    const part = { seq: snapshot.seq, hash: snapshot.hash, keyCount: snapshot.keyCount, keys: proof.keys, digest: proof.digest };
    const refusal =
      this.trust.checkSnapshotPart(part, proof.signature) ??
      (proof.keys === snapshot.keysReceived && proof.digest.equals(snapshot.digest.digestSoFar())
        ? undefined
        : {
            code: 'SIGNATURE_INVALID' as const,
            message: `snapshot at seq ${snapshot.seq}: the ${snapshot.keysReceived} records received are not the ${proof.keys} the root signed`,
          });
    if (refusal !== undefined) return this.refuseData(nowMs, session, refusal, actions);
    snapshot.bytesSinceProof = 0;
  }

  private snapshotEnd(
    nowMs: number,
    session: Session,
    snapshot: IncomingSnapshot,
    digest: Buffer,
    signature: Buffer | undefined,
    actions: DownstreamAction[],
  ): void {
    if (snapshot.keysReceived !== snapshot.keyCount)
      return void this.fail(nowMs, `snapshot announced ${snapshot.keyCount} keys and carried ${snapshot.keysReceived}`, actions);
    if (!snapshot.digest.digest().equals(digest)) return void this.fail(nowMs, 'snapshot digest mismatch', actions);
    if (this.trust !== undefined) {
      const refusal = this.trust.checkSnapshot({ seq: snapshot.seq, hash: snapshot.hash, keyCount: snapshot.keyCount, digest }, signature);
      if (refusal !== undefined) return this.refuseData(nowMs, session, refusal, actions);
      if (snapshot.rootKey !== undefined) this.trust.learn(snapshot.rootKey);
    }
    const datasetId = session.welcome!.datasetId;
    this.snapshot = undefined;
    this.head = { seq: snapshot.seq, hash: snapshot.hash };
    this.headTimeMs = undefined;
    this.datasetId = datasetId;
    this.resyncRequested = false;
    this.resyncedDivergence = undefined;
    this.snapshotsInstalled++;
    this.divergedVotes.clear();
    this.phase = 'streaming';
    this.dataArrived(nowMs, session);
    // The first upstream is an honest relay that could not sign its snapshot (only the root can: decision record 25),
    // and this one could. Once joined, entries (which the root signed) can come from the relay: go back to it at once
    // rather than after preferredUpstreamRetryMs, or a fleet joining through its relays would sit on the root.
    if (session.index !== 0 && this.preferredSentUnsignedSnapshot) session.preferredRetryAtMs = nowMs;
    this.preferredSentUnsignedSnapshot = false;
    actions.push({ type: 'snapshotFinish', seq: snapshot.seq, hash: snapshot.hash, datasetId });
    actions.push({ type: 'log', level: 'info', message: 'snapshot installed', fields: { seq: snapshot.seq, keys: snapshot.keysReceived, bytes: snapshot.bytesReceived } });
    this.ack(nowMs, session, actions);
  }

  private refused(nowMs: number, reason: RefuseReason, text: string, actions: DownstreamAction[]): void {
    if (reason === 'CHAIN_DIVERGED' || reason === 'UPSTREAM_DIVERGED') {
      const session = this.session!;
      this.divergedVotes.set(session.index, { verdict: reason, upstream: session.address, message: text });
      const vote = this.divergenceVerdict();
      if (vote !== undefined) return this.diverge(nowMs, vote, actions);
    }
    this.fail(nowMs, `upstream refused: ${reason}: ${text}`, actions);
  }

  /**
   * The vote that stops this node, once every upstream has voted CHAIN_DIVERGED or abstained (UPSTREAM_DIVERGED) and at
   * least one voted; undefined while an upstream has not, or none voted (relays that cannot judge condemn nothing).
   */
  private divergenceVerdict(): DivergenceVote | undefined {
    if (this.divergedVotes.size < this.upstreams.length) return undefined;
    const current = this.divergedVotes.get(this.session!.index);
    if (current?.verdict === 'CHAIN_DIVERGED') return current;
    for (const vote of this.divergedVotes.values()) if (vote.verdict === 'CHAIN_DIVERGED') return vote;
    return undefined;
  }

  private diverge(_nowMs: number, vote: DivergenceVote, actions: DownstreamAction[]): void {
    const session = this.session!;
    const reason = `upstream refused: CHAIN_DIVERGED: ${vote.message}`;
    this.endSession(session, reason, actions, false);
    this.phase = 'diverged';
    this.currentDivergence = { reason, head: { seq: this.head.seq, hash: Buffer.from(this.head.hash) } };
    this.lastFailure = reason;
    actions.push({ type: 'diverged', divergence: this.currentDivergence });
    const abstained = [...this.divergedVotes.values()].filter((each) => each.verdict === 'UPSTREAM_DIVERGED').map((each) => each.upstream);
    actions.push({
      type: 'log',
      level: 'error',
      message: 'chain diverged from the upstream: stopped following until an operator resyncs this node',
      fields: { upstream: vote.upstream, seq: this.head.seq, hash: this.head.hash.toString('hex'), reason, ...(abstained.length > 0 ? { abstained } : {}) },
    });
  }

  private ack(nowMs: number, session: Session, actions: DownstreamAction[]): void {
    session.ackedBytes = session.receivedBytes;
    session.ackedSeq = this.head.seq;
    session.lastAckMs = nowMs;
    actions.push({ type: 'send', connId: session.connId, bytes: encodeMessage({ type: 'ack', appliedSeq: this.head.seq, receivedBytes: session.receivedBytes }) });
  }

  private unexpected(nowMs: number, message: Message, actions: DownstreamAction[]): void {
    this.fail(nowMs, `MESSAGE_UNEXPECTED: ${message.type} while ${this.phase}`, actions);
  }

  private failProtocol(nowMs: number, error: unknown, actions: DownstreamAction[]): DownstreamAction[] {
    if (!(error instanceof ProtocolError)) throw error;
    return this.fail(nowMs, `${error.code}: ${error.message}`, actions);
  }

  /** Ends the session without counting a failure (resync, stop, divergence). */
  private endSession(session: Session, reason: string, actions: DownstreamAction[], peerClosed: boolean): void {
    if (!peerClosed) actions.push({ type: 'close', connId: session.connId, reason });
    if (this.snapshot !== undefined) {
      actions.push({ type: 'snapshotAbort', reason });
      this.snapshot = undefined;
    }
    this.session = undefined;
  }

  /** Drops the current upstream and schedules the next attempt on the next one in the list. */
  private fail(nowMs: number, reason: string, actions: DownstreamAction[], options: { peerClosed?: boolean } = {}): DownstreamAction[] {
    const session = this.session;
    assert.ok(session !== undefined);
    this.endSession(session, reason, actions, options.peerClosed ?? false);
    // The first upstream did not take this node back: stay longer on the fallback before the next return.
    if (session.returning && session.welcome === undefined) this.preferredRetryMs = Math.min(2 * this.preferredRetryMs, this.limits.preferredUpstreamRetryMsMax);
    if (this.provenSession(session, nowMs)) this.failures = 0;
    this.failures++;
    this.lastFailure = reason;
    this.nextIndex = (session.index + 1) % this.upstreams.length;
    this.phase = 'backoff';
    const delayMs = backoffDelayMs(this.failures, this.limits, this.random);
    this.nextAttemptMs = nowMs + delayMs;
    actions.push({
      type: 'log',
      level: 'warn',
      message: 'dropped upstream',
      fields: { upstream: session.address, reason, next: this.upstreams[this.nextIndex], retryInMs: delayMs, failures: this.failures },
    });
    return actions;
  }
}
