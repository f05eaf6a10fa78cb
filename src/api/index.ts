/**
 * The wire contracts of Mercury: what crosses the network between a node and its clients or peers, in one place that
 * depends on nothing but `Buffer`, so that the node (server side) and the clients (client side) share one definition.
 * A lint rule (eslint.config.js) keeps this folder from importing anything else.
 */
export { encodeJsonBytes, readJsonBytes, type BytesEncoding } from './bytes.js';
export { ERROR_STATUS, ErrorCode, MercuryError, ProtocolErrorCode, RefuseReason, isMercuryError, valueTooLarge } from './errors.js';
export { JsonValidator, parseBoundedJson, parseValidatedJson, type JsonLimits } from './json-validator.js';
export { RESERVED_KEY_PREFIX, decodeKeyPath, encodeKeyPath, isReservedKey, overlapsReserved, prefixEnd, validateKey, withoutReserved } from './keys.js';
export * from './limits.js';
export {
  formatCompare,
  formatOp,
  formatTxn,
  parseTxn,
  base64Length,
  txnBodyBytesFor,
  txnJsonLimits,
  TXN_JSON_DEPTH_MAX,
  TXN_JSON_ELEMENTS_MAX,
  TXN_OP_JSON_OVERHEAD_BYTES,
  type BytesJson,
  type CompareOp,
  type Txn,
  type TxnCompare,
  type TxnCompareJson,
  type TxnJson,
  type TxnOp,
  type TxnOpJson,
} from './txn.js';
export {
  DEFAULT_FILTERS,
  WATCH_CLIENT_MESSAGE_BYTES_MAX,
  WATCH_HEARTBEAT_INTERVAL_MS,
  WATCH_ID_CHARS_MAX,
  WATCH_MESSAGE_LIMITS,
  WATCH_PATH,
  WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
  WATCH_SERVER_MESSAGE_BYTES_MAX,
  WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX,
  WatchCloseCode,
  WatchErrorCode,
  WatchProtocolError,
  WatchResumeCursor,
  WatchServerMessageError,
  errorMessage,
  eventsBody,
  eventsHead,
  parseClientMessage,
  parseServerMessage,
  progressMessage,
  slowWatcherReason,
  snapshotMessage,
  subscribeMessage,
  subscribedMessage,
  unsubscribedMessage,
  type ClientMessage,
  type ServerMessage,
  type SubscribeRequest,
  type SubscriptionId,
  type WatchChange,
  type WatchFilters,
  type WatchMessageLimits,
  type WatchSnapshotItem,
} from './watch.js';
