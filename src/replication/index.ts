/**
 * Replication: the wire protocol and the two state machines (the replica side `Downstream`, the serving side
 * `Upstream`), without I/O. A TCP adapter owns the sockets and timers, feeds events in and performs the actions;
 * storage is reached through the `LogSource` / `SnapshotSource` interfaces.
 */
export {
  PROTOCOL_VERSION,
  FRAME_HEADER_BYTES,
  ENTRY_RECORD_OVERHEAD_BYTES,
  SNAPSHOT_RECORD_OVERHEAD_BYTES,
  NODE_ID_BYTES_MAX,
  PATH_NODES_MAX,
  HELLO_FRAME_BYTES_MAX,
  REFUSE_MESSAGE_BYTES_MAX,
  REPLICATION_LIMITS,
  REPLICATION_LIMITS_TEST,
  validateReplicationLimits,
} from './limits.js';
export type { ReplicationLimits } from './limits.js';
export {
  FrameDecoder,
  MessageType,
  ProtocolError,
  ProtocolErrorCode,
  RefuseReason,
  SnapshotDigest,
  announcedHttpUrl,
  decodeMessage,
  encodeEntries,
  encodeMessage,
  encodeSnapshotRecord,
  entriesFrameBytes,
  snapshotRecordBytes,
} from './protocol.js';
export type {
  AckMessage,
  EntriesMessage,
  Frame,
  Heartbeat,
  HeartbeatMessage,
  HeartbeatProof,
  HelloMessage,
  Message,
  RefuseMessage,
  SnapshotBeginMessage,
  SnapshotChunkMessage,
  SnapshotEndMessage,
  WelcomeMessage,
} from './protocol.js';
export { Downstream, backoffDelayMs } from './downstream.js';
export type { Divergence, DownstreamAction, DownstreamHistory, DownstreamOptions, DownstreamPhase, DownstreamStatus } from './downstream.js';
export { Upstream } from './upstream.js';
export type { ChildAuthorization, UpstreamAction, UpstreamOptions, UpstreamPhase, UpstreamStatus } from './upstream.js';
export type { LogSource, SnapshotSource } from './source.js';
export { ReplicationServer } from './server.js';
export type { ChildStatus, ReplicationServerOptions } from './server.js';
export { ReplicationClient } from './client.js';
export { RootHeartbeats } from './root-heartbeats.js';
export type { ReplicationClientOptions } from './client.js';
export { StoreLogSource } from './store-source.js';
