/**
 * Hostile input - watch messages that are not shared, on a real node with production limits. Found by the audit of
 * the watch queue budget (2026-12-08, decision record 85): a connection within its share (4 KiB) took any message,
 * so watchers reading nothing, each subscribed to its own prefix of one long key (no two share a message), held one
 * large event each beyond the 64 MiB budget: 1,000 of them held 997 MiB of 1 MiB events on a `mercury serve`, and the
 * node grew by 1,023 MiB. Now a message past a connection's share needs room in the budget; one that does not fit
 * waits in the log.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode } from '../src/node/index.js';
import { WATCH_LIMITS } from '../src/watch/index.js';
import { nodeMetric } from './support/fuzz.js';
import { request } from './support/http.js';
import { steadyValue } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';
import { clientFrame, rawWatchSocket } from './support/watch.js';

const MiB = 1024 * 1024;
const WATCHERS = 160;
/** More than the kernel's socket buffers take for a watcher that reads nothing, so the rest waits in the node. */
const EVENTS = 6;
const LONG_KEY = `big/${'p'.repeat(WATCHERS)}`;

describe('hostile input - watch messages that are not shared', () => {
  const dir = makeTempDir('hostile-memory-watch-unshared');
  after(() => removeDir(dir));

  test('watchers of distinct prefixes of one key, reading nothing, hold the queue budget and their shares, not an event each', async () => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off' });
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < WATCHERS; i++) {
        const { socket } = await rawWatchSocket(node.url);
        sockets.push(socket);
        socket.write(clientFrame(true, 0x1, Buffer.from(JSON.stringify({ type: 'subscribe', id: 1, prefixes: [LONG_KEY.slice(0, 5 + i)] }))));
      }
      await steadyValue(() => nodeMetric(node, 'mercury_watch_subscriptions'), 'subscriptions', (count) => count === WATCHERS);
      for (const socket of sockets) socket.pause();

      const value = Buffer.alloc(MiB - 64 * 1024, 0x61);
      for (let i = 0; i < EVENTS; i++) assert.equal((await request(node.url, 'PUT', `/v1/kv/${LONG_KEY}`, { body: value })).status, 200);
      const queued = await steadyValue(() => nodeMetric(node, 'mercury_watch_queued_bytes'), 'queued bytes', (bytes) => bytes > 0);
      const bound = WATCH_LIMITS.queueBytesTotalMax + WATCHERS * WATCH_LIMITS.queueBytesShareMax;
      // Before, one event each beyond the budget: 160 MiB here.
      assert.ok(queued <= bound, `${WATCHERS} watchers reading nothing, each its own selection of ${EVENTS} events of ${value.length} bytes, queue ${queued} bytes; the bound is ${bound}`);
      assert.ok(nodeMetric(node, 'mercury_watch_subscriptions_lagging') > 0, 'those whose events did not fit wait in the log');
    } finally {
      for (const socket of sockets) socket.destroy();
      await node.close();
    }
  });
});
