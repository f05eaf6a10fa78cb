/**
 * HTTP clients that vanish at the network level (test/support/netns.ts) part-way into a request: the node answers
 * 408 when the headers timeout passes, and must then let the connection go, though no FIN ever comes back.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { MercuryNode, NODE_LIMITS_TEST, validateConfig } from '../src/index.js';
import { HTTP_CLOSE_FLUSH_MS } from '../src/limits.js';
import { netnsUnavailable, socketsTo, withNetns } from './support/netns.js';
import { makeTempDir, removeDir } from './support/process.js';

const skip = netnsUnavailable();

test('vanish: HTTP connections whose client vanished part-way into its headers are destroyed HTTP_CLOSE_FLUSH_MS after their 408 (found by audit: the 408 ended them and waited for a FIN; still held after 90 s, and for good from a client that never closes)', { skip }, async () => {
  const dir = makeTempDir('vanish-http');
  try {
    await withNetns(async (ns) => {
      const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), host: ns.hostIp, port: 0, insecure: true }), { auth: 'off', limits: NODE_LIMITS_TEST });
      // Two connections from the namespace, each with part of a request's headers and then nothing.
      const port = new URL(node.url).port;
      const peer = ns.spawnIn(
        process.execPath,
        [
          '-e',
          `const net = require('node:net');
           let open = 0;
           for (let i = 0; i < 2; i++) {
             const socket = net.connect(${port}, ${JSON.stringify(ns.hostIp)}, () => {
               socket.write('GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n');
               if (++open === 2) console.log('sent');
             });
             socket.pause();
             socket.on('error', () => {});
           }
           setInterval(() => {}, 1000);`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      try {
        await new Promise<void>((resolve, reject) => {
          peer.stdout!.once('data', () => resolve());
          peer.once('exit', (code) => reject(new Error(`the peer exited (${code})`)));
        });
        // The peer's connect completes before the node accepts: wait until it holds both.
        for (const startedMs = performance.now(); socketsTo(ns) < 2; ) {
          assert.ok(performance.now() - startedMs < 5_000, `the node accepted ${socketsTo(ns)} of the peer's 2 connections`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        ns.vanish();
        const vanishedMs = performance.now();
        // The headers timeout, node:http's sweep (a tenth of it), the flush time: about 3 s under the test limits.
        const deadlineMs = NODE_LIMITS_TEST.http.headersTimeoutMs + HTTP_CLOSE_FLUSH_MS + 6_000;
        let held = socketsTo(ns);
        while (held > 0 && performance.now() - vanishedMs < deadlineMs) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          held = socketsTo(ns);
        }
        const heldMs = Math.round(performance.now() - vanishedMs);
        assert.equal(held, 0, `the node still held ${held} connections ${heldMs} ms after their client vanished`);
        assert.ok(heldMs >= NODE_LIMITS_TEST.http.headersTimeoutMs, `let go after ${heldMs} ms: not before the headers timeout`);
      } finally {
        peer.kill('SIGKILL');
        await node.close();
      }
    });
  } finally {
    removeDir(dir);
  }
});
