/**
 * Mercury's HTTP API driven by undici (npm `undici`, a devDependency), the row "Mercury (HTTP API, undici)": issue 12
 * asks the HTTP API to be fast "with a standard client", and this is the HTTP client other Node.js programs would
 * pick for speed, used as its documentation shows. One `Client` (one keep-alive connection, undici's default of one
 * request at a time on it) per load-driver client, as the node:http row has one connection per client: the same
 * requests on the wire, a different client stack. Plain `PUT`/`GET /v1/kv/KEY` and `POST /v1/txn`; no retries.
 */
import { Client, type Dispatcher } from 'undici';
import { encodeKeyPath } from '../../../src/api/index.js';
import type { KvClient } from '../system.js';
import { batchTxn } from './mercury-txn.js';

function keyPath(key: string): string {
  return `/v1/kv/${encodeKeyPath(Buffer.from(key, 'utf8'))}`;
}

/** Reads the whole answer: the body of a 200, undefined for a 404 where allowed; anything else throws with the body. */
async function answer(response: Dispatcher.ResponseData, what: string, missingAllowed = false): Promise<Buffer | undefined> {
  const body = Buffer.from(await response.body.arrayBuffer());
  if (response.statusCode === 200) return body;
  if (missingAllowed && response.statusCode === 404) return undefined;
  throw new Error(`${what}: HTTP ${response.statusCode} ${body.toString('utf8').slice(0, 300)}`);
}

export function connectUndici(origin: string): KvClient {
  const client = new Client(origin);
  return {
    async put(key, value) {
      await answer(await client.request({ method: 'PUT', path: keyPath(key), body: value, headers: { 'content-type': 'application/octet-stream' } }), `PUT ${key}`);
    },
    async get(key) {
      return await answer(await client.request({ method: 'GET', path: keyPath(key) }), `GET ${key}`, true);
    },
    async putBatch(entries) {
      const body = JSON.stringify(batchTxn(entries));
      await answer(await client.request({ method: 'POST', path: '/v1/txn', body, headers: { 'content-type': 'application/json' } }), 'POST /v1/txn');
    },
    async close() {
      await client.close();
    },
  };
}
