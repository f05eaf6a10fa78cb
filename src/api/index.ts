/**
 * The wire contracts of Mercury: what crosses the network between a node and its clients, in one place that depends
 * on nothing but `Buffer`, so that the node (server side) and the clients (client side) share one definition.
 */
export {
  DEFAULT_FILTERS,
  WATCH_CLIENT_MESSAGE_BYTES_MAX,
  WATCH_HEARTBEAT_INTERVAL_MS,
  WATCH_ID_CHARS_MAX,
  WATCH_MESSAGE_LIMITS,
  WATCH_PATH,
  WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
  WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX,
  WatchCloseCode,
  WatchErrorCode,
  WatchProtocolError,
  errorMessage,
  eventsBody,
  eventsHead,
  parseClientMessage,
  progressMessage,
  slowWatcherReason,
  snapshotMessage,
  subscribedMessage,
  unsubscribedMessage,
  type ClientMessage,
  type SubscriptionId,
  type WatchFilters,
  type WatchMessageLimits,
} from './watch.js';
