/** The body of Mercury's `POST /v1/txn` for a batch of puts, shared by its clients in the harness (mercury.ts, mercury-undici.ts). */
import type { TxnJson } from '../../../src/api/index.js';

function isAscii(value: Buffer): boolean {
  for (const byte of value) if (byte >= 0x80) return false;
  return true;
}

/** A batch as the body of `POST /v1/txn`: one put per entry, ASCII values as text. */
export function batchTxn(entries: readonly (readonly [string, Buffer])[]): TxnJson {
  return {
    success: entries.map(([key, value]) => (isAscii(value) ? { op: 'put', key, value: value.toString('latin1') } : { op: 'put', key, valueBase64: value.toString('base64') })),
  };
}
