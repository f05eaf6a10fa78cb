/**
 * The seeded replication simulation (test/support/sim): 213 nodes in a tree of depth 3, crashes, partitions, resets,
 * delay spikes and corrupted frames while the root writes; then every node must converge on the root's chain. Watch
 * consumers (fast, slow, stalling, hopping between nodes) follow subscriptions on the root and seven replicas
 * throughout, each message checked against the root's log, and must all reach the root's head. A
 * fixed set of seeds runs every time, plus two drawn from the test seed (test/support/seed.ts), which a failure names.
 * To replay a whole file run, or one simulation seed alone:
 *
 *   MERCURY_TEST_SEED=1234 node --test dist/test/replication-sim.test.js
 *   SIM_SEED=1234 node --test dist/test/replication-sim.test.js
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { reproduceWith, seeded, testSeed } from './support/seed.js';
import { Prng } from './support/sim/prng.js';
import { runSimulation, type SimulationStats } from './support/sim/simulation.js';

// 6058: a watcher closed 4008 while its snapshot waited for a reader, with no progress before the close (allowed).
const FIXED_SEEDS = [1, 2, 3, 42, 6058, 20240611];
// Withholding relays in the default tree, seeds that failed a sweep. 62050: the root cut off from a withholding relay's
// upstreams, whose heartbeats said the root was at its child's head until 1,624 ms after the entry was withheld.
const WITHHOLD_SEEDS = [62050];
const replay = process.env.SIM_SEED === undefined ? undefined : Number(process.env.SIM_SEED);

function summary(stats: SimulationStats): string {
  return [
    `root seq ${stats.rootSeq}`,
    `${stats.entriesApplied} entries applied`,
    `${stats.crashes} crashes`,
    `${stats.partitions} partitions`,
    `${stats.resets} resets`,
    `${stats.upstreamDrops} upstream drops (${stats.staleDrops} stale)`,
    `${stats.snapshotsInstalled} snapshots (${stats.rejoinSnapshots} after trims)`,
    `corrupt frames caught: ${stats.corruptDetected.wire} on the wire, ${stats.corruptDetected.relay} from relays`,
    `refusals ${JSON.stringify(stats.refusals)}`,
    `watches: ${stats.watch.consumers} consumers, ${stats.watch.events} events, ${stats.watch.progress} progress, ${stats.watch.snapshots} snapshots, ` +
      `${stats.watch.resumes} resumes (${stats.watch.slowCloses} after 4008, ${stats.watch.crashCloses} after crashes, ${stats.watch.hops} hops)`,
    `converged ${stats.convergedAfterMs} ms after the last write, ${stats.events} events`,
  ].join('; ');
}

describe('replication simulation', () => {
  if (replay !== undefined) {
    test(`simulation: seed ${replay} converges`, (t) => {
      t.diagnostic(summary(runSimulation({ seed: replay })));
    });
    return;
  }

  const fixed: SimulationStats[] = [];
  for (const seed of FIXED_SEEDS) {
    test(`simulation: seed ${seed}: every node converges on the root's chain through faults`, (t) => {
      const stats = runSimulation({ seed });
      t.diagnostic(summary(stats));
      fixed.push(stats);
      assert.ok(stats.nodes >= 200);
      // The run must have exercised what it claims to: failover on silence, rejoin through snapshots after trims.
      assert.ok(stats.crashes > 0 && stats.partitions > 0 && stats.resets > 0);
      assert.ok(stats.staleDrops > 0, 'no stale upstream was ever dropped');
      assert.ok(stats.rejoinSnapshots > 0, 'no node needed a snapshot after a trim');
    });
  }

  test('simulation: corrupted ENTRIES frames were delivered and caught, by the frame CRC and by the hash chain', () => {
    assert.equal(fixed.length, FIXED_SEEDS.length);
    const wire = fixed.reduce((sum, stats) => sum + stats.corruptDetected.wire, 0);
    const relay = fixed.reduce((sum, stats) => sum + stats.corruptDetected.relay, 0);
    assert.ok(wire > 0 && relay > 0, `caught ${wire} on the wire and ${relay} from relays`);
  });

  test('simulation: forging relays (recomputed hashes, signatures kept, stripped or their own) never get a forgery applied', (t) => {
    for (const seed of [7, testSeed()]) {
      // A smaller tree: every replica verifies a signature per frame, which the default 213 nodes would make slow.
      const stats = seeded(() => runSimulation({ seed, fanout: [3, 3, 3], faultMs: 4_000, signing: { forgers: 3 }, watchConsumers: 4 }));
      t.diagnostic(`seed ${seed}: ${summary(stats)}; forged frames ${stats.forged.injected}, refused at once ${stats.forged.detected}`);
      assert.ok(stats.forged.injected > 0, 'no forged frame was sent');
      assert.ok(stats.forged.detected > 0, 'no child was following a forging relay');
      assert.ok((stats.refusals.SIGNATURE_INVALID ?? 0) + (stats.refusals.SIGNATURE_MISSING ?? 0) === 0, 'refusals are counted by the child, not received');
    }
  });

  test('simulation: withholding relays (entries dropped behind the root\'s heartbeats, or their rootSeq pinned) lose every child within the stale time', (t) => {
    // The fixed seeds put children behind withholding relays while the root writes; a random seed need not. Its
    // withholders may spend the whole write period crashed, cut off, or refused the only snapshot they may take (the
    // root's), so that no child streams from them before the writes stop (seeds 911053569 and 831248838 withheld
    // nothing). The random seed must pass the run's own checks, the deadline on a withholding relay's children among
    // them. 351381303: n17 left withholding n5 985 ms after an entry was withheld, and the tree converged 41 ms later,
    // before the check due at 1,700 ms, which alone counted connections left: it counted none, and the test failed.
    const fixedSeeds = [11, 351381303];
    for (const seed of [...fixedSeeds, testSeed()]) {
      const stats = seeded(() => runSimulation({ seed, fanout: [3, 3, 3], faultMs: 4_000, signing: { forgers: 1, withholders: 2 }, watchConsumers: 4 }));
      t.diagnostic(`seed ${seed}: ${summary(stats)}; entries withheld ${stats.withheld.entries}, connections left ${stats.withheld.left}`);
      if (!fixedSeeds.includes(seed)) continue;
      assert.ok(stats.withheld.entries > 0, `seed ${seed}: no entry was withheld`);
      assert.ok(stats.withheld.left > 0, `seed ${seed}: no child left a withholding relay`);
    }
  });

  test('simulation: withholding relays in the default tree: regression seeds', (t) => {
    for (const seed of WITHHOLD_SEEDS) {
      const stats = runSimulation({ seed, signing: { forgers: 1, withholders: 2 } });
      t.diagnostic(`seed ${seed}: ${summary(stats)}; entries withheld ${stats.withheld.entries}, connections left ${stats.withheld.left}`);
      assert.ok(stats.withheld.entries > 0 && stats.withheld.left > 0);
    }
  });

  test('simulation: a root clock that jumps an hour ahead for one heartbeat, then steps back an hour, drops no healthy upstream', (t) => {
    const hourMs = 3_600_000;
    // Relative to a root clock two hours ahead of simulated time, so that it never goes below zero.
    const rootClockOffsetMs = (simMs: number): number => (simMs >= 1_950 && simMs < 2_050 ? 3 * hourMs : simMs < 4_000 ? 2 * hourMs : hourMs);
    const seed = testSeed();
    // No faults, and writes further apart than any stale time: between them, heartbeats alone keep the links alive.
    const stats = seeded(() => runSimulation({ seed, faults: false, faultMs: 9_000, writeTailMs: 0, writeIntervalMs: [1_200, 2_000], rootClockOffsetMs }));
    t.diagnostic(summary(stats));
    assert.equal(stats.staleDrops, 0, `${stats.staleDrops} healthy upstreams dropped as stale`);
    assert.ok(stats.rootSeq > 30 + 3);
  });

  test('simulation: watch consumers were closed as slow, cut by crashes, hopped nodes, got snapshots, and resumed every time', () => {
    assert.equal(fixed.length, FIXED_SEEDS.length);
    const total = (key: 'slowCloses' | 'crashCloses' | 'hops' | 'snapshots' | 'resumes' | 'events'): number => fixed.reduce((sum, stats) => sum + stats.watch[key], 0);
    assert.ok(total('slowCloses') > 0, 'no consumer was ever closed with 4008');
    assert.ok(total('crashCloses') > 0, 'no watch connection was cut by a crash');
    assert.ok(total('hops') > 0 && total('snapshots') > 0 && total('events') > 0);
    assert.ok(total('resumes') >= total('slowCloses') + total('hops'));
  });

  // Derived from the test seed, so that MERCURY_TEST_SEED replays them; each simulation failure also names its own.
  const derived = new Prng(testSeed());
  for (let i = 0; i < 2; i++) {
    const seed = derived.int(0, 2 ** 31 - 1);
    test(`simulation: seed ${seed} from the test seed converges`, (t) => {
      t.diagnostic(`seed=${seed} (${reproduceWith()})`);
      t.diagnostic(summary(runSimulation({ seed })));
    });
  }
});
