/** `mercury sync`: a directory tree kept in step with a key prefix through a watch (sync.ts). */
export { DirectorySync, SYNC_EXEC_DEBOUNCE_MS_DEFAULT, SYNC_LOCK_FILE } from './sync.js';
export type { SyncOptions, SyncReport } from './sync.js';
export { keyToPath, pathToKey, SYNC_RESERVED_PREFIX } from './paths.js';
export type { KeyPath } from './paths.js';
export { SYNC_STATE_FILE } from './state.js';
export { SYNC_BYTES_MAX_DEFAULT, SYNC_FILES_MAX_DEFAULT } from './budget.js';
