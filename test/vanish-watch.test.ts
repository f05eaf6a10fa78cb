/**
 * Watch clients that vanish at the network level (test/support/netns.ts): their host stops answering, no FIN, no RST.
 * The node must let their connections go within WATCH_PEER_SILENT_MS and the close timeout, and must keep quiet
 * clients that are there (they answer its pings).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MercuryNode, NODE_LIMITS_TEST, validateConfig } from '../src/index.js';
import { WATCH_LIMITS_TEST } from '../src/watch/index.js';
import { netnsUnavailable, withNetns } from './support/netns.js';
import { makeTempDir, removeDir } from './support/process.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const skip = netnsUnavailable();

/** Watch connections and the silent-close counter, from the node's status and metrics. */
async function watchState(node: MercuryNode): Promise<{ connections: number; silentCloses: number }> {
  const status = (await (await fetch(`${node.url}/v1/status`)).json()) as { watch: { connections: number } };
  const metrics = await (await fetch(`${node.url}/metrics`)).text();
  // A counter has no sample until it first counts.
  const silentCloses = Number(/^mercury_watch_silent_closes_total (\d+)$/m.exec(metrics)?.[1] ?? '0');
  return { connections: status.watch.connections, silentCloses };
}

test('vanish: watch clients whose host vanishes (one subscribed, one with no subscription) are let go within WATCH_PEER_SILENT_MS and the close timeout; quiet clients that answer pings stay (found by audit: both were held until the test gave up, 40 s; a subscribed one 938 s under the production limits, until the kernel gave up retransmitting heartbeats, one without subscriptions forever)', { skip }, async () => {
  const dir = makeTempDir('vanish-watch');
  try {
    await withNetns(async (ns) => {
      const config = validateConfig({ dataDir: join(dir, 'node'), host: ns.hostIp, port: 0, insecure: true });
      const node = await MercuryNode.start(config, { auth: 'off', limits: NODE_LIMITS_TEST });
      // The peer: `ws` (which answers pings, as RFC 6455 asks) in the namespace, one connection subscribed, one not.
      const peer = ns.spawnIn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { WebSocket } from 'ws';
           const url = ${JSON.stringify(`ws://${ns.hostIp}:${new URL(node.url).port}/v1/watch`)};
           const subscribed = new WebSocket(url);
           subscribed.on('open', () => subscribed.send(JSON.stringify({ type: 'subscribe', id: 1, prefixes: [''] })));
           subscribed.on('message', (data) => { if (JSON.parse(data).type === 'subscribed') console.log('subscribed'); });
           const bare = new WebSocket(url);
           bare.on('open', () => console.log('open'));
           for (const ws of [subscribed, bare]) ws.on('error', () => {});`,
        ],
        { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      try {
        let said = '';
        await new Promise<void>((resolve, reject) => {
          peer.stdout!.setEncoding('utf8').on('data', (text: string) => {
            said += text;
            if (said.includes('subscribed') && said.includes('open')) resolve();
          });
          peer.once('exit', (code) => reject(new Error(`the peer exited (${code}): ${said}`)));
        });
        // Quiet for three times the silent time, the link up: the node pings, the peer answers, nothing is closed.
        await new Promise((resolve) => setTimeout(resolve, 3 * WATCH_LIMITS_TEST.peerSilentMs));
        assert.deepEqual(await watchState(node), { connections: 2, silentCloses: 0 }, 'quiet clients that answer pings stay open');

        ns.vanish();
        const vanishedMs = performance.now();
        // Silent time, then the close frame's timeout (the peer answers nothing): about 4.5 s under the test limits.
        const expectedMs = WATCH_LIMITS_TEST.peerSilentMs + WATCH_LIMITS_TEST.closeTimeoutMs;
        const deadlineMs = expectedMs + 6_000;
        let state = await watchState(node);
        while (state.connections > 0 && performance.now() - vanishedMs < deadlineMs) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          state = await watchState(node);
        }
        const heldMs = Math.round(performance.now() - vanishedMs);
        assert.equal(state.connections, 0, `the node still held ${state.connections} watch connections ${heldMs} ms after their client vanished`);
        assert.equal(state.silentCloses, 2);
        assert.ok(heldMs >= WATCH_LIMITS_TEST.peerSilentMs, `let go after ${heldMs} ms: not before the silent time`);
      } finally {
        peer.kill('SIGKILL');
        await node.close();
      }
    });
  } finally {
    removeDir(dir);
  }
});
