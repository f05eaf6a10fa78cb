/**
 * Replication under a root whose wall clock misbehaves, between two in-process nodes over real TCP, at the test
 * preset's timings (a stale upstream is dropped after 750 ms). One heartbeat carries a time an hour ahead, then the
 * root's clock steps back an hour: the replica must keep following, since every deadline runs on its own monotonic
 * clock and heartbeats are ordered by seq (docs/decisions.md, record 10).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { systemClock, type Clock, type TimerHandle } from '../src/clock/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { request } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';

const HOUR_MS = 3_600_000;

/** The system clock with a wall-clock offset that a test steps, and a one-off skew for the next wall-clock reading. */
class SteppedClock implements Clock {
  offsetMs = 0;
  nextSkewMs: number | undefined;
  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    return systemClock.setTimeout(fn, delayMs);
  }
  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    return systemClock.setInterval(fn, intervalMs);
  }
  monotonicMs(): number {
    return systemClock.monotonicMs();
  }
  nowMs(): number {
    const skew = this.nextSkewMs ?? 0;
    this.nextSkewMs = undefined;
    return systemClock.nowMs() + this.offsetMs + skew;
  }
}

const dir = makeTempDir('replication-clock');
const nodes: MercuryNode[] = [];
after(async () => {
  for (const node of nodes.reverse()) await node.close();
  removeDir(dir);
});

test('replication: one heartbeat an hour ahead, then a root clock stepped back an hour, drop no healthy upstream', async () => {
  const rootClock = new SteppedClock();
  const root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0 }), { auth: 'off', clock: rootClock, limits: NODE_LIMITS_TEST });
  nodes.push(root);
  assert.equal((await request(root.url, 'PUT', '/v1/kv/k', { body: 'v' })).status, 200);
  const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [root.replicationAddress] }), { auth: 'off', limits: NODE_LIMITS_TEST });
  nodes.push(replica);
  const link = () => replica.replicationClient!.status();
  await eventually(
    () => Promise.resolve(link().phase === 'streaming' && link().head.seq === root.store.head().seq && link().lastHeartbeatRootSeq !== undefined),
    () => JSON.stringify(link()),
  );
  const switches = link().upstreamSwitches;

  // The root's next heartbeat says an hour ahead; wait until it was made and delivered.
  rootClock.nextSkewMs = HOUR_MS;
  await eventually(
    () => Promise.resolve(rootClock.nextSkewMs === undefined),
    () => 'no heartbeat was made',
  );
  const { heartbeatIntervalMs, upstreamStaleMs, upstreamStaleHopMs } = NODE_LIMITS_TEST.replication;
  // Then the root's clock steps back an hour, and the root stays idle for several stale times: only heartbeats, made
  // every heartbeatIntervalMs with times an hour behind the skewed one, keep the link alive.
  rootClock.offsetMs = -HOUR_MS;
  const idleMs = 4 * (upstreamStaleMs + upstreamStaleHopMs);
  await new Promise((resolve) => setTimeout(resolve, idleMs));
  assert.ok(idleMs > 10 * heartbeatIntervalMs);
  assert.equal(link().upstreamSwitches, switches, `the replica dropped its upstream: ${link().lastFailure}`);
  assert.equal(link().phase, 'streaming');
  // And it still follows writes.
  assert.equal((await request(root.url, 'PUT', '/v1/kv/k', { body: 'after' })).status, 200);
  await eventually(
    () => Promise.resolve(replica.store.head().seq === root.store.head().seq),
    () => JSON.stringify(link()),
  );
});
