/**
 * Mercury's in-process reader: `openLocal(dataDir)`, a read-only LMDB view of a node's data directory in the reading
 * process, which is how Quicksilver's consumers read. With its default freshness (the read snapshot is renewed before
 * every read, so each get sees everything committed before it started).
 */
import { openLocal } from '../../src/client/index.js';

export interface LocalReader {
  get(key: Buffer): Buffer | undefined;
  close(): Promise<void>;
}

export async function openLocalReader(dataDir: string): Promise<LocalReader> {
  const reader = await openLocal(dataDir);
  return {
    get: (key) => reader.getSync(key)?.value,
    close: () => reader.close(),
  };
}
