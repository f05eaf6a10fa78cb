export { DATA_DIR_MODE, Store } from './store.js';
export type { KeyRange, LogBounds, RangeItem, RangePage, SnapshotReader, SnapshotRecord, StoreOptions, WriteView } from './store.js';
export { evaluateCompare } from './compare.js';
export type { Compare } from './compare.js';
export { prefixEnd } from './records.js';
export { LOCK_FILE, lockDataDir } from './data-dir-lock.js';
export type { DataDirLock } from './data-dir-lock.js';
export type { KeyRecord } from './records.js';
export type { DamageReport } from './health.js';
