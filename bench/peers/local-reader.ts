/**
 * Mercury's in-process reader: a read-only LMDB view of a node's data directory in the reading process, which is how
 * Quicksilver's consumers read. Behind this adapter until the `openLocal(dataDir)` reader lands; then only
 * `openLocalReader` changes.
 */
import { Store } from '../../src/store/index.js';

export interface LocalReader {
  get(key: Buffer): Buffer | undefined;
  close(): Promise<void>;
}

export function openLocalReader(dataDir: string): LocalReader {
  const store = Store.open({ path: dataDir, readOnly: true });
  return {
    get: (key) => store.get(key).record?.value,
    close: () => store.close(),
  };
}
