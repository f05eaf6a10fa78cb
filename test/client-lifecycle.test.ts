/**
 * TypeScript client: lifecycle in a process that embeds a node, as an application or a test does. The client's idle
 * connections keep nothing alive (a script ends when its work does), so whatever the node waits for while it closes
 * must keep the process alive itself.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { MercuryNode, NODE_LIMITS_TEST, connect, validateConfig } from '../src/index.js';
import { makeTempDir, removeDir } from './support/process.js';

test('client lifecycle: a node closed while a wire client holds an idle connection to it finishes closing, though nothing else keeps the process alive (found by audit: close() never resolved, the process exited 13 with the store open)', async () => {
  const dir = makeTempDir('client-lifecycle');
  try {
    const config = validateConfig({ dataDir: join(dir, 'node'), host: '127.0.0.1', port: 0 });
    const node = await MercuryNode.start(config, { auth: 'off', limits: NODE_LIMITS_TEST });
    const client = connect(node.wireUrl);
    await client.put('lifecycle/a', 'x');
    client.close();
    // Nothing else is pending here: before the fix the event loop emptied during close(), and the runner failed the
    // test with "Promise resolution is still pending but the event loop has already resolved".
    await node.close();
    // Closed for real: the data directory (its lock released) opens again, with the write.
    const again = await MercuryNode.start(config, { auth: 'off', limits: NODE_LIMITS_TEST });
    assert.equal((await connect(again.url).get('lifecycle/a'))?.value.toString(), 'x');
    await again.close();
  } finally {
    removeDir(dir);
  }
});
