export { WatchHub } from './hub.js';
export type { WatchHubOptions, WatchSource } from './hub.js';
export {
  WATCH_LIMITS,
  WATCH_LIMITS_TEST,
  validateWatchLimits,
  type WatchLimits,
} from './limits.js';
export { canonicalSelection, EventCache, SelectionIndex, type Selection } from './selection.js';
export { WatchMachine } from './machine.js';
export type { WatchAction, WatchConnection, WatchCounters, WatchInput, WatchMachineOptions, WatchReads, WatchSnapshotPage } from './machine.js';
export { textFrame } from './frame.js';
