/**
 * Limits and timings of replication, with units last in the name, and the relations between them.
 *
 * The state machines never read these constants directly: they take a `ReplicationLimits` object, so that the
 * simulation and the unit tests can run with `REPLICATION_LIMITS_TEST`, where windows, frames and timeouts are small
 * enough that flow-control stalls, multi-frame snapshots and stale-upstream failovers happen constantly.
 * `validateReplicationLimits` asserts the relations below for any set, and runs on both presets at module load.
 */
import assert from 'node:assert/strict';
import { ENTRY_BYTES_MAX, ENTRY_OPS_MAX, ID_BYTES_MAX, KEY_BYTES_MAX, REPLICATION_CHILDREN_MAX_DEFAULT, SNAPSHOT_READERS_MAX, VALUE_BYTES_CEILING } from '../limits.js';
import { HASH_BYTES, SIGNATURE_BYTES } from '../log/index.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Bumped on any incompatible change of the frame format or of a message; both sides must agree exactly. */
export const PROTOCOL_VERSION = 6;

/** u32 length | u32 crc32 | u8 type (see protocol.ts). */
export const FRAME_HEADER_BYTES = 4 + 4 + 1;

/**
 * Bytes an entry record adds to the encoded size of its ops and author runs (which the committer counts with each
 * request): the body header (format, seq, timeMs, op count), the run count, the signature and its length, two hashes.
 */
export const ENTRY_RECORD_OVERHEAD_BYTES = 1 + 8 + 8 + 4 + 4 + 1 + SIGNATURE_BYTES + 2 * HASH_BYTES;

/** Bytes a snapshot record adds to its key and value: u16 key length, u32 value length, createSeq, modSeq, version. */
export const SNAPSHOT_RECORD_OVERHEAD_BYTES = 2 + 4 + 8 + 8 + 4;

/** Node and dataset ids travel as u8-length-prefixed UTF-8, at most src/limits.ts's ID_BYTES_MAX (which a u8 holds). */
export const NODE_ID_BYTES_MAX = ID_BYTES_MAX;
assert.ok(NODE_ID_BYTES_MAX <= 0xff, 'an id fits a str8: its length is a u8');

/**
 * Deepest tree the protocol describes: a heartbeat carries the ids of every node from the root down to its sender,
 * and a node refuses children once its own path is this long. 32 levels of fan-out is far beyond any real tree.
 */
export const PATH_NODES_MAX = 32;

/** The credential a child presents in HELLO (a bearer token, 64 characters today): a str8 like the ids. */
export const HELLO_CREDENTIAL_BYTES_MAX = NODE_ID_BYTES_MAX;

/**
 * The largest HELLO frame: header, version and flags, dataset and node ids, a path of PATH_NODES_MAX ids, the head,
 * the HTTP URL (a str8 like the ids), the credential. With ACK (16 bytes of payload) it is all a child ever sends.
 */
export const HELLO_FRAME_BYTES_MAX =
  FRAME_HEADER_BYTES +
  2 +
  1 +
  2 * (1 + NODE_ID_BYTES_MAX) +
  1 +
  PATH_NODES_MAX * (1 + NODE_ID_BYTES_MAX) +
  8 +
  HASH_BYTES +
  (1 + NODE_ID_BYTES_MAX) +
  1 +
  HELLO_CREDENTIAL_BYTES_MAX;

/** The human-readable part of a REFUSE. */
export const REFUSE_MESSAGE_BYTES_MAX = 1024;
/**
 * Of a REFUSE, the most a relay quotes of why it stopped following (the refusal it got, which quotes the one its own
 * upstream got, and so on up a chain of relays; or a hostile upstream's longest text): the rest of the message says
 * what the child should do, and must not be cut off.
 */
export const REFUSE_QUOTE_BYTES_MAX = 512;

export interface ReplicationLimits {
  /** Largest entry record the protocol must carry: the entry limit of the commit path plus the record overhead. */
  readonly entryRecordBytesMax: number;
  /** Largest frame, header included. The decoder refuses a larger length before reading the payload. */
  readonly frameBytesMax: number;
  /**
   * Largest frame an upstream accepts from a child, which only sends HELLO and ACK. Far below `frameBytesMax`, so a
   * peer that opens a connection and starts an endless frame costs a few KiB, not a frame's worth, until it is closed.
   */
  readonly childFrameBytesMax: number;
  /**
   * Children an upstream serves per remote host: an IPv4 address, an IPv6 /64 (src/net, hostSlotKey). Without
   * authentication, one host could otherwise hold every child slot with fake children that HELLO and ACK, and keep real
   * replicas out for as long as it likes.
   */
  readonly childrenPerAddressMax: number;
  /**
   * Sockets the port holds while they close (a REFUSE flushing, a dropped session's last frames). Each is destroyed a
   * second after it was ended at the latest (server.ts, CLOSE_FLUSH_MS), whatever the peer sends; beyond this many, a
   * socket to close is destroyed at once, its last frames unsent. Refused peers sit outside the child slots, so without
   * it peers refused faster than a second apart would hold the descriptors that sessions, HTTP and LMDB need.
   */
  readonly closingSocketsMax: number;
  /**
   * On a TLS replication port, sockets accepted and not yet through their first byte and TLS handshake (each for at most
   * `handshakeTimeoutMs`); beyond this many a new one is destroyed at once. They are no session yet, so no other cap
   * counts them: 300 peers connecting together held 233 descriptors in that stage.
   */
  readonly handshakingSocketsMax: number;
  /**
   * ... and of those, from one remote host (an IPv4 address or an IPv6 /64): with the whole cap to itself, one host
   * that connects and stays silent (or sends part of a ClientHello) every 10 s kept every replica from joining.
   */
  readonly handshakingSocketsPerAddressMax: number;
  /** An ENTRIES frame is filled up to this many record bytes (but always carries at least one entry). */
  readonly entriesFrameBytesTarget: number;
  /** ... and at most this many entries. */
  readonly entriesFrameEntriesMax: number;
  /** A SNAPSHOT_CHUNK is filled up to this many key and value bytes (always at least one record). */
  readonly snapshotChunkBytesTarget: number;
  /**
   * A signing root sends a SNAPSHOT_PROOF (its signature over the records so far) after the chunk that brings the
   * records' bytes since the last proof to this many. A replica with `--trust-key` refuses a snapshot whose records
   * since its last verified proof reached this many before a further chunk: what an upstream that claims a signed
   * snapshot and streams forever can make it stage is this plus one frame. Root and replica must agree on it, as on
   * the protocol version.
   */
  readonly snapshotProofBytes: number;
  /**
   * Flow control: an upstream stops sending to a child once this many bytes, or entries, are sent but not acknowledged.
   * This bounds what one child can hold in socket buffers; a child that falls further behind is served from the log
   * on disk later, never from memory.
   */
  readonly childWindowBytesMax: number;
  readonly childWindowEntriesMax: number;
  /**
   * Bytes the sockets of all children together may hold unsent in this process (what the kernel has not taken), and
   * the share of it a child may hold whatever the others hold. A child past its share, while the children together are
   * past the total, is sent nothing more (as if its window were full) until its socket drains below its share. Without
   * it a child that never reads holds its window minus what the kernel takes: 32 fake children that HELLO as new
   * replicas took a root from its idle RSS to 415 MiB more (13 MiB each), 3.3 GiB over the 256 children a node serves
   * (audit, 2026-12-07).
   */
  readonly childrenQueuedBytesMax: number;
  readonly childQueuedBytesShare: number;
  /**
   * ... and what the children of one remote host (an IPv4 address, an IPv6 /64) may hold together, beyond their shares.
   * Every frame is weighed before it is read and framed (`UpstreamOptions.queueRoom`): one that would take the child
   * past its share, its host past this or the children past the total waits, unless its host holds nothing (so a frame
   * larger than any of them still goes, one at a time per host). Weighed only after it was queued, each of 64 silent
   * children of one host kept a frame of about 1 MiB past its share, 160 MiB together (audit, 2026-12-08; record 87).
   */
  readonly childrenQueuedBytesPerAddressMax: number;
  /**
   * Snapshots the children of one remote host are sent at once. Each holds one of the node's snapshot readers (64,
   * shared with backups and watches) for as long as its child takes to read it, up to the 30 s ACK timeout for one
   * that reads nothing: 64 silent children of one host held them all, and every other replica that needed a snapshot
   * was refused UNAVAILABLE until they timed out, again and again (audit, 2026-12-08; record 87).
   */
  readonly childSnapshotsPerAddressMax: number;
  /**
   * What one turn of the event loop sends one child from a snapshot or the log, about (the frame that reaches it is
   * the last): the rest of the window follows on later turns (upstream.ts, "Work per turn"). So a child's first page
   * leaves after one chunk is read, not after a whole window, and other work of the node runs between the chunks.
   */
  readonly pumpTurnBytesMax: number;
  /** A child acknowledges whenever this many bytes, or entries, arrived since its last ACK ... */
  readonly ackEveryBytes: number;
  readonly ackEveryEntries: number;
  /** ... and at least this often while connected, which doubles as its keep-alive. */
  readonly ackIntervalMs: number;
  /**
   * Keys one write transaction of a replica writes or removes (a put or a delete is one, a range delete the keys of its
   * range), at most: the entries held for the end of a turn are cut there, and the rest is written a turn later, so
   * that a replica catching up on large range deletes gives its reads, watches, timers and children a turn between
   * transactions instead of holding its event loop for all of them (docs/decisions.md, record 33). An entry is never
   * split: one larger than this is a transaction of its own, as on the root that committed it.
   */
  readonly applyBatchKeysMax: number;
  /**
   * Verified entries a replica holds decoded, read from its upstream but not yet written, weigh at most about this many
   * bytes (record bytes plus 256 per op, what decoding costs): past it the replica stops reading the upstream's socket
   * until they are written, and TCP holds the rest back. An upstream that keeps to the window rarely reaches it; one
   * that ignores the window cannot make a replica hold more than this and one socket read (about 64 KiB of records).
   */
  readonly replicaHeldBytesMax: number;
  /** Entries read from the log per read when a child is behind. */
  readonly logReadEntriesMax: number;
  /** The root sends a heartbeat this often; every node forwards it to its children at once. */
  readonly heartbeatIntervalMs: number;
  /**
   * A replica drops an upstream that sent no progress (an entry, a snapshot chunk or a heartbeat newer than any seen)
   * for `upstreamStaleMs + depth * upstreamStaleHopMs`. The per-hop term lets an intermediate node fail over before
   * its own children give up on it, so that one silent link does not make the whole subtree reconnect at once.
   */
  readonly upstreamStaleMs: number;
  readonly upstreamStaleHopMs: number;
  /** An upstream closes a child that sent no ACK for this long (the child acks every `ackIntervalMs`). */
  readonly childAckTimeoutMs: number;
  /**
   * While a child is sent a snapshot, each window of `snapshotPaceWindowMs` in which it holds at least half its
   * window unacknowledged must see it acknowledge at least `snapshotPaceBytesMin`, else it is closed (CHILD_TOO_SLOW).
   * A snapshot holds an LMDB read transaction, which keeps LMDB from reusing any page freed after it began: a child
   * acknowledging a trickle (any progress restarts the stall clock) held it, and the data file grew by every write, for
   * as long as it liked (audit, 2026-12-07). 1 MiB a minute is 17 KB/s, below any link a replica would join over.
   */
  readonly snapshotPaceWindowMs: number;
  readonly snapshotPaceBytesMin: number;
  /** An upstream closes a connection whose HELLO has not arrived after this long. */
  readonly handshakeTimeoutMs: number;
  /** Reconnect delays grow from min to max (doubling per consecutive failure, with jitter) and never go below min. */
  readonly reconnectBackoffMsMin: number;
  readonly reconnectBackoffMsMax: number;
  /** A session that lasted this long counts as healthy: the next failure starts the backoff from min again. */
  readonly backoffResetMs: number;
  /**
   * A replica that failed over to a later upstream in its list tries the first one again after streaming this long,
   * so the tree regains the shape the operator configured once a failed node is back. If the first is still down,
   * the replica is back on the later one after one short backoff.
   */
  readonly preferredUpstreamRetryMs: number;
  /**
   * A return to the preferred upstream that it does not welcome within this long (shorter than `handshakeTimeoutMs`:
   * the replica left a healthy session for it, and is not joined meanwhile) goes back to the fallback, and the next
   * return waits twice as long as the last, up to `preferredUpstreamRetryMsMax`, until the preferred one welcomes it
   * again. A preferred upstream that vanished (no RST, no refusal) cost a whole handshake timeout every return: 10 s
   * of NOT_JOINED, and writes 10 s late, in every 40 s (audit, 2026-12-07; docs/decisions.md, record 84).
   */
  readonly preferredHandshakeTimeoutMs: number;
  readonly preferredUpstreamRetryMsMax: number;
}

export const REPLICATION_LIMITS: ReplicationLimits = Object.freeze({
  entryRecordBytesMax: ENTRY_BYTES_MAX + ENTRY_RECORD_OVERHEAD_BYTES,
  frameBytesMax: ENTRY_BYTES_MAX + 1 * MiB,
  childFrameBytesMax: 12 * KiB,
  childrenPerAddressMax: 64,
  closingSocketsMax: 64,
  handshakingSocketsMax: 32,
  handshakingSocketsPerAddressMax: 8,
  entriesFrameBytesTarget: 1 * MiB,
  entriesFrameEntriesMax: 1024,
  snapshotChunkBytesTarget: 1 * MiB,
  snapshotProofBytes: 4 * MiB,
  childWindowBytesMax: 16 * MiB,
  childWindowEntriesMax: 8192,
  // A child over a long link keeps a window of frames in this process beyond the kernel's buffers (a bandwidth-delay
  // product above 4 MiB): 64 MiB in flight together still carry 640 MB/s at a 100 ms round trip.
  childrenQueuedBytesMax: 64 * MiB,
  childQueuedBytesShare: 256 * KiB,
  // A quarter, as a host holds at most a quarter of the child slots (64 of 256).
  childrenQueuedBytesPerAddressMax: 16 * MiB,
  // A quarter of the node's 64 snapshot readers (src/limits.ts, SNAPSHOT_READERS_MAX).
  childSnapshotsPerAddressMax: 16,
  pumpTurnBytesMax: 1 * MiB,
  ackEveryBytes: 4 * MiB,
  ackEveryEntries: 2048,
  ackIntervalMs: 1_000,
  // The most keys the root writes in one entry (a range delete removes at most as many, src/limits.ts): a replica's
  // transaction then holds about the work of the root's largest commit, and entries of a few ops stay one per turn.
  applyBatchKeysMax: ENTRY_OPS_MAX,
  // A window of one-op entries (8,192 of them, some 3 MB weighed) stays below it; entries of 10,000 tiny puts (129 KB
  // of records, 2.7 MB weighed) pause the socket after about a dozen, which costs a flood of them no throughput.
  replicaHeldBytesMax: 32 * MiB,
  logReadEntriesMax: 1024,
  heartbeatIntervalMs: 1_000,
  upstreamStaleMs: 10_000,
  upstreamStaleHopMs: 1_000,
  childAckTimeoutMs: 30_000,
  snapshotPaceWindowMs: 60_000,
  snapshotPaceBytesMin: 1 * MiB,
  handshakeTimeoutMs: 10_000,
  reconnectBackoffMsMin: 100,
  reconnectBackoffMsMax: 10_000,
  backoffResetMs: 10_000,
  preferredUpstreamRetryMs: 30_000,
  // A handshake is a TCP connect, a TLS handshake and HELLO/WELCOME: four or five round trips, 1.5 s at 300 ms, or
  // one lost SYN (retransmitted after 1 s) and a short link.
  preferredHandshakeTimeoutMs: 3_000,
  preferredUpstreamRetryMsMax: 480_000,
});

/**
 * Small limits for tests and the simulation: a window holds a handful of entries, frames and chunks a few KiB, and
 * every timeout is short, so that the edge cases (window stalls, snapshots over many chunks, failover, backoff caps)
 * happen in every run. Entries in such tests must stay below `entryRecordBytesMax`.
 */
export const REPLICATION_LIMITS_TEST: ReplicationLimits = Object.freeze({
  entryRecordBytesMax: 8 * KiB,
  frameBytesMax: 16 * KiB,
  childFrameBytesMax: 12 * KiB,
  childrenPerAddressMax: 4,
  closingSocketsMax: 8,
  handshakingSocketsMax: 32,
  handshakingSocketsPerAddressMax: 8,
  entriesFrameBytesTarget: 2 * KiB,
  entriesFrameEntriesMax: 16,
  snapshotChunkBytesTarget: 1 * KiB,
  snapshotProofBytes: 4 * KiB,
  childWindowBytesMax: 8 * KiB,
  childWindowEntriesMax: 32,
  childrenQueuedBytesMax: 64 * KiB,
  childQueuedBytesShare: 4 * KiB,
  childrenQueuedBytesPerAddressMax: 16 * KiB,
  // Every child slot of a host: tests run all their replicas on 127.0.0.1.
  childSnapshotsPerAddressMax: 4,
  pumpTurnBytesMax: 4 * KiB,
  ackEveryBytes: 3 * KiB,
  ackEveryEntries: 8,
  ackIntervalMs: 100,
  applyBatchKeysMax: 64,
  replicaHeldBytesMax: 32 * KiB,
  logReadEntriesMax: 16,
  heartbeatIntervalMs: 100,
  upstreamStaleMs: 600,
  upstreamStaleHopMs: 150,
  childAckTimeoutMs: 1_500,
  snapshotPaceWindowMs: 3_000,
  snapshotPaceBytesMin: 1 * KiB,
  handshakeTimeoutMs: 500,
  reconnectBackoffMsMin: 20,
  reconnectBackoffMsMax: 1_000,
  backoffResetMs: 1_000,
  preferredUpstreamRetryMs: 2_000,
  preferredHandshakeTimeoutMs: 200,
  preferredUpstreamRetryMsMax: 16_000,
});

/** Asserts the relations between limits (a violation is a configuration bug, so it throws an AssertionError). */
export function validateReplicationLimits(limits: ReplicationLimits): ReplicationLimits {
  for (const [name, value] of Object.entries(limits)) assert.ok(Number.isSafeInteger(value) && value > 0, `replication limit ${name} must be a positive integer`);
  // The largest entry, and the largest snapshot record (a key and a value of maximal size), must each fit in a frame
  // of their own: ENTRIES carries u32 count | u32 length | record, SNAPSHOT_CHUNK u32 count | record.
  assert.ok(limits.frameBytesMax >= FRAME_HEADER_BYTES + 4 + 4 + limits.entryRecordBytesMax, 'an entry must fit in a frame');
  assert.ok(limits.entryRecordBytesMax > ENTRY_RECORD_OVERHEAD_BYTES);
  assert.ok(limits.frameBytesMax <= 0xffffffff, 'frame length is a u32');
  assert.ok(limits.entriesFrameBytesTarget <= limits.frameBytesMax - FRAME_HEADER_BYTES - 4);
  // Whatever a child may legitimately send fits, and the bound on a child's frames is the tighter one.
  assert.ok(limits.childFrameBytesMax >= HELLO_FRAME_BYTES_MAX, 'the largest HELLO must fit in a child frame');
  assert.ok(limits.childFrameBytesMax <= limits.frameBytesMax);
  // One address holds at most a share of the default child slots, so replicas elsewhere still find room.
  assert.ok(limits.childrenPerAddressMax * 4 <= REPLICATION_CHILDREN_MAX_DEFAULT, 'one address must not hold the child slots');
  assert.ok(limits.handshakingSocketsPerAddressMax * 4 <= limits.handshakingSocketsMax, 'one address must not hold the handshake slots');
  assert.ok(limits.snapshotChunkBytesTarget <= limits.frameBytesMax - FRAME_HEADER_BYTES - 4);
  // Proofs are a few signatures per snapshot, not one per chunk.
  assert.ok(limits.snapshotProofBytes >= 2 * limits.snapshotChunkBytesTarget);
  assert.ok(limits.entriesFrameEntriesMax <= limits.childWindowEntriesMax, 'a full frame must fit in an empty window');
  // A child acknowledges before the window fills, so an upstream waiting on a full window always hears back.
  assert.ok(limits.ackEveryBytes <= limits.childWindowBytesMax / 2);
  assert.ok(limits.ackEveryEntries <= limits.childWindowEntriesMax / 2);
  assert.ok(limits.logReadEntriesMax <= limits.childWindowEntriesMax);
  // A child holds its share whatever the others hold; many shares fit in the children's queues.
  assert.ok(limits.childQueuedBytesShare * 4 <= limits.childrenQueuedBytesMax, 'a share is a small part of the queues');
  // A host's part holds several shares, and is a part: other hosts keep room when one host's children read nothing.
  assert.ok(limits.childrenQueuedBytesPerAddressMax >= 2 * limits.childQueuedBytesShare, "a host's part of the queues holds several shares");
  assert.ok(limits.childrenQueuedBytesPerAddressMax * 4 <= limits.childrenQueuedBytesMax, "one host's children must not hold the queues");
  assert.ok(limits.childSnapshotsPerAddressMax <= limits.childrenPerAddressMax, 'a host has a snapshot for each of its children at most');
  assert.ok(limits.pumpTurnBytesMax > 0 && limits.pumpTurnBytesMax <= limits.childWindowBytesMax, 'a turn sends some of a window, at most all of it');
  // Entries of one op each, as many as one ACK covers, are one transaction: the budget cuts only turns of larger work.
  assert.ok(limits.applyBatchKeysMax >= limits.ackEveryEntries, 'a batch of one-op entries between two ACKs must fit one transaction');
  // Several heartbeats fit in the stale time, so one delayed heartbeat never triggers a failover.
  assert.ok(limits.heartbeatIntervalMs * 3 <= limits.upstreamStaleMs);
  // An intermediate that lost its upstream gets at least a few reconnect attempts before its children give up on it.
  assert.ok(limits.upstreamStaleHopMs >= 2 * limits.reconnectBackoffMsMin);
  // A child's keep-alive ACKs arrive many times within the upstream's timeout.
  assert.ok(limits.ackIntervalMs * 3 <= limits.childAckTimeoutMs);
  // A pace window spans many ACKs, and its floor is less than half a window (which a lagging child holds unread).
  assert.ok(limits.snapshotPaceWindowMs >= limits.childAckTimeoutMs);
  assert.ok(limits.snapshotPaceBytesMin > 0 && limits.snapshotPaceBytesMin <= limits.childWindowBytesMax / 2);
  assert.ok(limits.reconnectBackoffMsMin <= limits.reconnectBackoffMsMax);
  // Returning to the preferred upstream is rare next to everything else a session does.
  assert.ok(limits.preferredUpstreamRetryMs >= limits.backoffResetMs && limits.preferredUpstreamRetryMs >= 2 * limits.upstreamStaleMs);
  // A return gives up sooner than a first connection, and costs a small part of the time between two returns.
  assert.ok(limits.preferredHandshakeTimeoutMs <= limits.handshakeTimeoutMs, 'a return to the preferred upstream gives up no later than a handshake');
  assert.ok(limits.preferredHandshakeTimeoutMs * 10 <= limits.preferredUpstreamRetryMs, 'a failed return costs a tenth of the retry interval at most');
  assert.ok(limits.preferredUpstreamRetryMsMax >= limits.preferredUpstreamRetryMs);
  return limits;
}

validateReplicationLimits(REPLICATION_LIMITS);
validateReplicationLimits(REPLICATION_LIMITS_TEST);
// One host's joining children leave most of the node's snapshot readers to other hosts, backups and watches.
assert.ok(REPLICATION_LIMITS.childSnapshotsPerAddressMax * 4 <= SNAPSHOT_READERS_MAX, "one host's children must not hold the snapshot readers");
// The production entry limit covers the largest value the store accepts under the largest key.
// A relay's refusal is its own words, about 250 bytes at most, around what it quotes.
assert.ok(REFUSE_QUOTE_BYTES_MAX + 300 <= REFUSE_MESSAGE_BYTES_MAX, 'a quoted reason leaves room for the remedy of a refusal');
assert.ok(REPLICATION_LIMITS.entryRecordBytesMax >= VALUE_BYTES_CEILING + KEY_BYTES_MAX + SNAPSHOT_RECORD_OVERHEAD_BYTES);
assert.ok(REPLICATION_LIMITS.frameBytesMax >= FRAME_HEADER_BYTES + 4 + VALUE_BYTES_CEILING + KEY_BYTES_MAX + SNAPSHOT_RECORD_OVERHEAD_BYTES);
