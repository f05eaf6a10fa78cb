export { NodeClient, UnavailableError, encodeKeyPath } from './http-client.js';
export type { KeyValue, RangePageResult, TxnJson } from './http-client.js';
