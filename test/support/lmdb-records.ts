/**
 * Damage to one record of a data directory, made through LMDB itself: the rest of the file stays sound, so what a
 * test sees is how Mercury reads that record, not how LMDB reads a damaged page.
 */
import assert from 'node:assert/strict';
import { open } from 'lmdb';

/**
 * Rewrites a sub-database record of a data directory directly in LMDB, as a disk fault would: `change` gets a copy of
 * the stored bytes and returns the new ones, or undefined to remove the record. The directory may be a running
 * node's: LMDB serialises the write with the node's own, and the node sees it from its next read transaction.
 */
export async function rewriteRaw(dir: string, dbName: string, key: string, change: (stored: Buffer) => Buffer | undefined): Promise<void> {
  const env = open({ path: dir, maxDbs: 8 });
  const db = env.openDB<Buffer, Buffer>({ name: dbName, encoding: 'binary', keyEncoding: 'binary' });
  const stored = db.get(Buffer.from(key));
  assert.ok(stored !== undefined, `${dbName}/${key} exists`);
  const changed = change(Buffer.from(stored));
  if (changed === undefined) await db.remove(Buffer.from(key));
  else await db.put(Buffer.from(key), changed);
  await env.close();
}

/**
 * Writes a record that Mercury never wrote (a key of another shape, as damage would leave one) straight into LMDB, or
 * removes it (`value` undefined).
 */
export async function writeRaw(dir: string, dbName: string, key: Buffer, value: Buffer | undefined): Promise<void> {
  const env = open({ path: dir, maxDbs: 8 });
  const db = env.openDB<Buffer, Buffer>({ name: dbName, encoding: 'binary', keyEncoding: 'binary' });
  if (value === undefined) await db.remove(key);
  else await db.put(key, value);
  await env.close();
}
