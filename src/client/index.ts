export { connect, MercuryClient } from './client.js';
export type { RangeOptions, RangePage } from './client.js';
export { encodeKeyPath } from '../api/index.js';
export { NodeClient, bearer } from './http-client.js';
export { BusyTimeoutError, isBusy, retryWhileBusy } from './busy.js';
export type { BusyWait, BusyWaitOptions } from './busy.js';
export { tlsErrorHint } from './tls.js';
export type { ClientTls } from './tls.js';
export type { CallSignal, KeyValue, KeyValueAtSeq, LogPage, RangePageResult, ReadOptions, TokenInfo, TxnResult, WriteOptions, WriteResult } from './http-client.js';
export {
  ClientOptionsError,
  CompareFailedError,
  InvalidAnswerError,
  InvalidRequestError,
  LimitExceededError,
  NoNodeReachableError,
  NodeFailedError,
  UnknownCodeError,
  NodeUnavailableError,
  NotFoundError,
  OutcomeUnknownError,
  PermissionDeniedError,
  SeqNotRetainedError,
  SeqWaitTimeoutError,
  ServerError,
  UnauthenticatedError,
  UnavailableError,
  WatchClosedError,
  WatchError,
} from './errors.js';
export type { ClientOptions, ValidatedClientOptions } from './options.js';
export { isHeaderToken, quotedUrl, validateNodeUrl } from './options.js';
export { TxnBuilder, cmp, op } from './txn.js';
export type { Bytes, CompareOp, NodeStatus, TxnCompareJson, TxnJson, TxnOpJson } from './txn.js';
export { Watch } from './watch.js';
export type { WatchOptions } from './watch.js';
export type { WatchEvent, WatchFilterOptions } from './watch-cursor.js';
export { LocalReader, openLocal } from './local.js';
export type { LocalOptions, LocalReadOptions } from './local.js';
