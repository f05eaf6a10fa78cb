/** Data directories are directories whatever their name looks like (lmdb-js guesses a file from a dot). */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Store } from '../src/store/index.js';
import { makeTempDir, removeDir } from './support/process.js';

test('store: a data directory with a dot in its name holds data.mdb inside it', async () => {
  const parent = makeTempDir('dotted');
  const dir = join(parent, 'tmp.abc123');
  try {
    const store = Store.open({ path: dir });
    store.commit(1, (view) => view.apply({ type: 'put', key: Buffer.from('k'), value: Buffer.from('v') }));
    await store.close();
    assert.ok(existsSync(join(dir, 'data.mdb')));
  } finally {
    removeDir(parent);
  }
});
