/**
 * Mercury's public API. Everything a program embedding or talking to Mercury may use is exported here, and nothing
 * else is part of the contract.
 */
export {
  connect,
  openLocal,
  MercuryClient,
  LocalReader,
  Watch,
  NodeClient,
  TxnBuilder,
  cmp,
  op,
  ServerError,
  InvalidAnswerError,
  InvalidRequestError,
  LimitExceededError,
  NotFoundError,
  CompareFailedError,
  SeqNotRetainedError,
  SeqWaitTimeoutError,
  NodeUnavailableError,
  NodeFailedError,
  UnknownCodeError,
  UnavailableError,
  NoNodeReachableError,
  OutcomeUnknownError,
  UnauthenticatedError,
  PermissionDeniedError,
  WatchClosedError,
  WatchError,
  ClientOptionsError,
} from './client/index.js';
export type {
  ClientOptions,
  ValidatedClientOptions,
  KeyValue,
  KeyValueAtSeq,
  ReadOptions,
  WriteOptions,
  CallSignal,
  RangeOptions,
  RangePage,
  RangePageResult,
  WriteResult,
  TokenInfo,
  TxnResult,
  TxnJson,
  TxnCompareJson,
  TxnOpJson,
  CompareOp,
  Bytes,
  NodeStatus,
  WatchOptions,
  WatchEvent,
  WatchFilterOptions,
  LocalOptions,
  LocalReadOptions,
} from './client/index.js';
export { MercuryNode, MERCURY_VERSION } from './node/index.js';
export type { NodeLimits, NodeOptions } from './node/index.js';
export type { AuthMode } from './auth/index.js';
export { NODE_LIMITS, NODE_LIMITS_TEST, withLimits } from './node/index.js';
export { validateConfig, CONFIG_DEFAULTS } from './config/index.js';
export type { NodeConfig } from './config/index.js';
export { MercuryError, ErrorCode, ERROR_STATUS } from './errors/index.js';
export * as limits from './limits.js';
export { WATCH_PATH, WatchCloseCode, WatchErrorCode } from './api/index.js';
export type { WatchFilters } from './api/index.js';
export type { WatchLimits } from './watch/index.js';
