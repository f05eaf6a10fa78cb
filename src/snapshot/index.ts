/**
 * Backups: the snapshot file format (format.ts), the node's side that streams one (stream.ts), and the restore that
 * makes a data directory from one (restore.ts).
 */
export {
  EntryStreamDecoder,
  SNAPSHOT_FORMAT_VERSION,
  SNAPSHOT_SEQ_MAX,
  SnapshotDecoder,
  SnapshotEncoder,
  encodeEntryStreamRecord,
  snapshotFileBytes,
} from './format.js';
export type { SnapshotDecoderPhase, SnapshotHeader } from './format.js';
export { SNAPSHOT_PIECE_BYTES, snapshotFileStream } from './stream.js';
export type { SnapshotFileStream } from './stream.js';
export { RESTORE_PARTIAL_DIR, restoreSnapshot } from './restore.js';
export type { RestoreOptions, RestoreProgress, RestoreResult } from './restore.js';
