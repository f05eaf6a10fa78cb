export { createApiHandler } from './api.js';
export type { NodeApi } from './api.js';
export { createHttpServer } from './http-server.js';
export type { HttpServerOptions } from './http-server.js';
export { decodePathBytes, encodeJsonBytes } from './bytes.js';
export { formatTxnJson, parseTxnJson } from './txn-json.js';
