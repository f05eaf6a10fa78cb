/**
 * Failover between a hostile and an honest upstream under churn, with real processes and sockets: a replica with
 * `--trust-key` lists a forging relay first and an honest path to the root second, while the root keeps committing and
 * both links are cut again and again. What must hold: no forged byte is ever applied, the replica ends on the honest
 * upstream at the root's head within a bounded time, it does not return to the forging relay in a tight loop (its
 * backoff grows, and once settled it stays put), and its sockets and memory stay bounded.
 */
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { rssBytes, MiB } from './support/hostile.js';
import { auditLog, metricValue } from './support/http.js';
import { assertSameChain, converged, eventually, put, statusOf, treeForSuite } from './support/tree.js';

const FORGED = 'forged by the relay';
/** How long the links are cut and the relay flaps while the root writes. */
const CHURN_MS = 7_500;
/**
 * The honest link is cut this often during the churn: three cuts. Each sends the replica to the forging relay, which
 * fails it once more: about six failures in a row, so its backoff grows to some 3 s (10 s is the cap).
 */
const HONEST_CUT_EVERY_MS = 2_500;
/** The relay drops every connection it holds this often during the churn. */
const RELAY_FLAP_EVERY_MS = 700;
/** From the end of the churn to the honest upstream: at most two more tries (relay, then honest), 1.6 + 3.2 s of backoff. */
const SETTLE_MS_MAX = 12_000;
/** How long the settled replica is watched for a return to the relay (the preferred-upstream retry is 30 s). */
const QUIET_MS = 2_500;

/** Sockets the process holds open (/proc/PID/fd entries that are sockets). */
function openSockets(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false; // closed between the listing and the read
    }
  }).length;
}

describe('failover: a forging relay and an honest upstream under churn', () => {
  const { serve, proxy } = treeForSuite('failover-hostile');

  test('failover: the replica never applies forged data, settles on the honest upstream at the root head, and does not flap back', async (t) => {
    const root = await serve('root');
    for (let i = 0; i < 20; i++) await put(root, `before-${i}`, `v${i}`);
    const hostile = await proxy(root.replication);
    hostile.forging = 'keep';
    const honest = await proxy(root.replication);
    // The forging relay first: it is what the replica tries at start and after every failure of the honest link.
    const replica = await serve('replica', ['--upstream', `${hostile.address},${honest.address}`, '--trust-key', join(root.dataDir, 'signing-key.pub.pem')]);
    await converged(root, [replica]);
    const pid = replica.child.pid!;
    const socketsBefore = openSockets(pid);
    const rssBefore = rssBytes(pid);

    // The root keeps committing throughout, so that every connection through the relay carries something to forge.
    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        await put(root, `churn-${written % 50}`, `w${written}`);
        written++;
        await new Promise((resolve) => setTimeout(resolve, 30));
      }
    })();
    const churnStart = Date.now();
    let honestCuts = 0;
    let nextHonestCut = churnStart + HONEST_CUT_EVERY_MS;
    while (Date.now() - churnStart < CHURN_MS) {
      await new Promise((resolve) => setTimeout(resolve, RELAY_FLAP_EVERY_MS));
      hostile.cutAll();
      if (Date.now() >= nextHonestCut) {
        honest.cutAll();
        honestCuts++;
        nextHonestCut += HONEST_CUT_EVERY_MS;
      }
    }
    const hostileAcceptedAtChurnEnd = hostile.accepted;

    // Settling: the writes go on for a while (were the replica on the relay, the next one would be forged and refused),
    // then one last write, which the replica must reach through the honest upstream.
    const settleStart = Date.now();
    await eventually(
      async () => (await statusOf(replica)).replication.upstream?.address === honest.address,
      async () => JSON.stringify((await statusOf(replica)).replication),
      SETTLE_MS_MAX,
    );
    writing = false;
    await writer;
    await put(root, 'last', 'honest');
    await eventually(
      async () => {
        const [r, s] = await Promise.all([statusOf(root), statusOf(replica)]);
        return r.seq === s.seq && r.headHash === s.headHash;
      },
      async () => JSON.stringify({ root: (await statusOf(root)).seq, replica: (await statusOf(replica)).replication }),
      SETTLE_MS_MAX,
    );
    const settleMs = Date.now() - settleStart;

    // Settled: no return to the relay while it stays quiet (the next planned one is the 30 s preferred retry).
    const acceptedSettled = hostile.accepted;
    await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
    await put(root, 'quiet', 'still honest');
    await converged(root, [replica]);
    const status = await statusOf(replica);
    const trust = (status as unknown as { trust: { refusals: number; lastRefusal: { code: string; upstream: string } | null } }).trust;
    const refusalsMetric = await metricValue(replica.url, /^mercury_replication_signature_refusals (\d+)/m);
    const switches = await metricValue(replica.url, /^mercury_replication_upstream_switches (\d+)/m);
    const socketsAfter = openSockets(pid);
    const rssAfter = rssBytes(pid);
    t.diagnostic(
      `${written} writes, ${honestCuts} honest cuts, relay: ${hostile.accepted} connections (${hostileAcceptedAtChurnEnd} by the end of the churn), ${hostile.forgedFrames} frames forged; ` +
        `refusals ${trust.refusals}, switches ${switches}; settled in ${settleMs} ms; sockets ${socketsBefore} -> ${socketsAfter}; ` +
        `RSS ${(rssBefore / MiB).toFixed(0)} -> ${(rssAfter / MiB).toFixed(0)} MiB`,
    );

    // The attack happened, and was refused every time.
    assert.ok(hostile.forgedFrames >= 1, 'the relay forged something');
    assert.ok(trust.refusals >= 1 && refusalsMetric === trust.refusals, `refusals ${trust.refusals}, metric ${refusalsMetric}`);
    assert.equal(trust.lastRefusal?.upstream, hostile.address);
    assert.equal(status.replication.upstream?.address, honest.address);
    assert.equal(status.replication.phase, 'streaming');
    const log = JSON.stringify(await auditLog(replica.url));
    assert.ok(!log.includes(FORGED) && !log.includes(Buffer.from(FORGED).toString('base64')), 'a forged value was applied');
    await assertSameChain(replica, root);

    // No tight loop: the replica reaches the relay about twice per honest cut (the cut, then a failure on the relay),
    // and its backoff grows between tries; settled, it never goes back.
    assert.ok(hostile.accepted <= 2 * (honestCuts + 2), `${hostile.accepted} connections to the relay for ${honestCuts} cuts of the honest link`);
    assert.equal(hostile.accepted, acceptedSettled, 'the settled replica went back to the relay');
    // Bounded: the sockets of the dropped links are closed, memory did not grow with the churn, no listener leak.
    assert.ok(socketsAfter <= socketsBefore + 2, `sockets ${socketsBefore} -> ${socketsAfter}`);
    assert.ok(rssAfter - rssBefore < 64 * MiB, `RSS grew ${((rssAfter - rssBefore) / MiB).toFixed(0)} MiB`);
    assert.doesNotMatch(replica.stderr(), /MaxListenersExceeded/);
    assert.equal(replica.child.exitCode, null);
  });
});
