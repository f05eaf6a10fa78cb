/**
 * A large events message goes to every watcher that shares it as one buffer. Found by the fairness audit (2026-12-07):
 * 250 watchers reading nothing, each with its own subscription id, queued 262 MB for one 1 MiB event, because each
 * socket was handed the shared body framed again (a copy per socket), so the node's watch queue budget (record 76),
 * which lets a connection under its share take one more message, held a copy per connection. Now the body's frame
 * header is written apart from it, and a socket that cannot take the message holds the shared body itself.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode } from '../src/node/index.js';
import { nodeMetric } from './support/fuzz.js';
import { request } from './support/http.js';
import { steadyValue } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';
import { clientFrame, rawWatchSocket } from './support/watch.js';

const MiB = 1024 * 1024;
const WATCHERS = 64;
/** More than the kernel's socket buffers take for a reader that reads nothing, so the rest waits in the node. */
const EVENTS = 12;

/** A full collection, so that what the buffers measure is what is held (node:test runs without --expose-gc). */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

describe('watch: a large event shared by many watchers', () => {
  const dir = makeTempDir('watch-shared-body');
  after(() => removeDir(dir));

  test('64 watchers reading nothing hold one copy of a 1 MiB event, not one each', async () => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off' });
    const sockets: { destroy(): void }[] = [];
    try {
      for (let i = 0; i < WATCHERS; i++) {
        const { socket } = await rawWatchSocket(node.url);
        sockets.push(socket);
        // Each with its own subscription id: the message's head differs per id, its body is shared.
        socket.write(clientFrame(true, 0x1, Buffer.from(JSON.stringify({ type: 'subscribe', id: i + 1, prefixes: ['big/'] }))));
      }
      await steadyValue(() => nodeMetric(node, 'mercury_watch_subscriptions'), 'subscriptions', (count) => count === WATCHERS);
      // Read nothing more: whatever the kernel does not take stays queued in the node.
      for (const socket of sockets) (socket as import('node:net').Socket).pause();

      collectGarbage();
      const before = process.memoryUsage().arrayBuffers;
      const value = Buffer.alloc(MiB - 64 * 1024, 0x61);
      for (let i = 0; i < EVENTS; i++) assert.equal((await request(node.url, 'PUT', `/v1/kv/big/${i}`, { body: value })).status, 200);
      const queued = await steadyValue(() => nodeMetric(node, 'mercury_watch_queued_bytes'), 'queued bytes', (bytes) => bytes > 0);
      collectGarbage();
      const grown = process.memoryUsage().arrayBuffers - before;
      // The queues count each message per connection (their bound is per connection)...
      assert.ok(queued > WATCHERS * value.length, `the watchers' queues hold ${queued} bytes of the events`);
      // ...and their budget counts each body once, with each socket's head of the message (record 85).
      const counted = nodeMetric(node, 'mercury_watch_queue_budget_bytes');
      assert.ok(counted <= EVENTS * (value.length + WATCHERS * 128), `the queue budget counts ${counted} bytes of ${EVENTS} events of ${value.length} bytes`);
      // ...but each message's body is one buffer: before, each socket held a framed copy of each (69 MB here against 7 MB after).
      assert.ok(grown < EVENTS * value.length + 4 * MiB, `${WATCHERS} watchers of ${EVENTS} events of ${value.length} bytes grew this process's buffers by ${grown} bytes; one copy of each is ${EVENTS * value.length}`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await node.close();
    }
  });
});
