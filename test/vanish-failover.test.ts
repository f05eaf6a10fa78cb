/**
 * A replica whose preferred upstream vanishes at the network level (test/support/netns.ts): no FIN, no RST, no
 * refusal. It must fail over within the stale time, and its returns to the vanished upstream must not keep it off
 * replication for a whole handshake timeout every preferredUpstreamRetryMs.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { MercuryNode, NODE_LIMITS_TEST, validateConfig } from '../src/index.js';
import { REPLICATION_LIMITS_TEST } from '../src/replication/index.js';
import { netnsUnavailable, startNodeIn, withNetns } from './support/netns.js';
import { makeTempDir, removeDir } from './support/process.js';

const L = REPLICATION_LIMITS_TEST;
const skip = netnsUnavailable();

interface ReplicationJson {
  phase: string;
  upstream: { address: string } | null;
  lastFailure: string | null;
}

async function replicationOf(node: MercuryNode): Promise<ReplicationJson> {
  return ((await (await fetch(`${node.url}/v1/status`)).json()) as { replication: ReplicationJson }).replication;
}

test('vanish: a replica whose preferred upstream vanished fails over within the stale time, gives a return to it preferredHandshakeTimeoutMs (not the whole handshake timeout), and waits twice as long before the next (found by audit: each return cost 10 s of NOT_JOINED in every 40 s under the production limits)', { skip }, async () => {
  const dir = makeTempDir('vanish-failover');
  try {
    await withNetns(async (ns) => {
      const root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), host: ns.hostIp, port: 0, insecure: true }), { auth: 'off', limits: NODE_LIMITS_TEST });
      const relay = await startNodeIn(ns, join(dir, 'relay'), [root.replicationAddress]);
      const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), host: '127.0.0.1', port: 0, upstreams: [relay.replication, root.replicationAddress] }), {
        auth: 'off',
        limits: NODE_LIMITS_TEST,
      });
      try {
        const waitFor = async (what: string, timeoutMs: number, check: (status: ReplicationJson) => boolean): Promise<number> => {
          const startedMs = performance.now();
          for (;;) {
            const status = await replicationOf(replica);
            if (check(status)) return performance.now();
            assert.ok(performance.now() - startedMs < timeoutMs, `${what} within ${timeoutMs} ms; status: ${JSON.stringify(status)}`);
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        };
        const on = (address: string) => (status: ReplicationJson) => status.phase === 'streaming' && status.upstream?.address === address;
        await waitFor('the replica streams from its preferred upstream', 10_000, on(relay.replication));

        ns.vanish();
        // Stale time at depth 2, one backoff, a handshake: about 1 s under the test limits.
        await waitFor('the replica fails over to the root', L.upstreamStaleMs + 2 * L.upstreamStaleHopMs + 3_000, on(root.replicationAddress));
        // After preferredUpstreamRetryMs on the root it tries the relay again: silent, so the return is given up.
        const returns: number[] = [];
        for (let i = 0; i < 2; i++) {
          returns.push(await waitFor(`return ${i + 1} to the preferred upstream`, 4 * L.preferredUpstreamRetryMs + 2_000, (status) => status.upstream?.address === relay.replication));
          await waitFor(`back on the root after return ${i + 1}`, L.handshakeTimeoutMs + 2_000, on(root.replicationAddress));
          const { lastFailure } = await replicationOf(replica);
          assert.equal(lastFailure, `no answer to the handshake within ${L.preferredHandshakeTimeoutMs} ms`, 'a return is given up after preferredHandshakeTimeoutMs');
        }
        // The second return came after twice the retry interval (the first one was not welcomed).
        const gapMs = returns[1]! - returns[0]!;
        assert.ok(gapMs >= 2 * L.preferredUpstreamRetryMs - 100, `${Math.round(gapMs)} ms between two returns to a vanished upstream; at least ${2 * L.preferredUpstreamRetryMs} expected`);
      } finally {
        relay.child.kill('SIGKILL');
        await replica.close();
        await root.close();
      }
    });
  } finally {
    removeDir(dir);
  }
});
