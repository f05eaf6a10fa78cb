/**
 * Readiness rules (`/readyz`), as a pure function: each reason with its code, and the lag threshold
 * (`--ready-max-lag-ms`) that takes a replica catching up a backlog out of rotation.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { READY_LAG_MS_MAX_DEFAULT, validateConfig } from '../src/config/index.js';
import { parseScopes } from '../src/auth/index.js';
import { readiness, type ReadinessInput } from '../src/node/index.js';
import { statusFor } from '../src/server/routes/status.js';
import { runCli } from './support/process.js';

const sound: ReadinessInput = { damageCount: 0, firstDamage: undefined, writeFault: undefined, replicationPause: undefined, replicationPhase: 'streaming', lagMs: 0, lagMsMax: 5_000 };

describe('readiness', () => {
  test('readiness: a sound root, and a joined replica within the lag threshold, are ready', () => {
    assert.deepEqual(readiness({ ...sound, replicationPhase: undefined, lagMs: undefined }), { ready: true, reasons: [] });
    assert.deepEqual(readiness(sound), { ready: true, reasons: [] });
    assert.deepEqual(readiness({ ...sound, lagMs: 5_000 }), { ready: true, reasons: [] }, 'at the threshold is within it');
    assert.deepEqual(readiness({ ...sound, lagMs: undefined }), { ready: true, reasons: [] }, 'an unknown lag is no reason');
  });

  test('readiness: a replica more than --ready-max-lag-ms behind is LAGGING; one that is not streaming is NOT_JOINED only', () => {
    const lagging = readiness({ ...sound, lagMs: 5_001 });
    assert.equal(lagging.ready, false);
    assert.deepEqual(lagging.reasons, ['LAGGING: the replica is 5001 ms behind the root, more than --ready-max-lag-ms 5000; it is catching up']);
    assert.equal(readiness({ ...sound, lagMs: 60_000, lagMsMax: 120_000 }).ready, true, 'the threshold is the operator\'s');
    assert.deepEqual(readiness({ ...sound, replicationPhase: 'connecting', lagMs: 60_000 }).reasons, ['NOT_JOINED: the replica is connecting, not streaming from an upstream']);
    // Halted on damaged data: it will not rejoin by itself, so the reason says what to do.
    assert.match(readiness({ ...sound, replicationPhase: 'halted' }).reasons.join('\n'), /^NOT_JOINED: replication halted on damaged data .*\(mercury resync\)/);
  });

  test('readiness: damaged data and storage faults are reasons with their codes, all of them listed', () => {
    const result = readiness({ ...sound, damageCount: 2, firstDamage: 'key "a"', writeFault: { code: 'STORAGE_FULL', message: 'disk full' }, lagMs: 9_000 });
    assert.equal(result.ready, false);
    assert.deepEqual(
      result.reasons.map((reason) => reason.split(':')[0]),
      ['DATA_CORRUPTED', 'STORAGE_FULL', 'LAGGING'],
    );
    // /readyz takes no token: it says that damage was met, not which key (status tells an admin token); a record of the
    // store's own is named.
    assert.match(result.reasons[0]!, /damaged data met 2 times; GET \/v1\/status with an admin token says where$/);
    assert.match(readiness({ ...sound, damageCount: 1, firstDamage: 'log entry 17' }).reasons[0]!, /damaged data met 1 times; first: log entry 17$/);
  });

  test('readiness: a replica whose replication a storage failure paused says so, though its small writes go through', () => {
    const paused = readiness({ ...sound, replicationPhase: 'idle', replicationPause: { code: 'STORAGE_FULL', message: 'disk full' } });
    assert.deepEqual(paused.reasons, ['STORAGE_FULL: replication paused, retried every second: disk full', 'NOT_JOINED: the replica is idle, not streaming from an upstream']);
    // The store's own fault says it already.
    const both = readiness({ ...sound, writeFault: { code: 'STORAGE_FULL', message: 'disk full' }, replicationPause: { code: 'STORAGE_FULL', message: 'disk full' } });
    assert.deepEqual(both.reasons, ['STORAGE_FULL: disk full']);
  });

  test('readiness: --ready-max-lag-ms is validated once; 5000 ms by default', async () => {
    assert.equal(validateConfig({}).readyLagMsMax, READY_LAG_MS_MAX_DEFAULT);
    assert.equal(READY_LAG_MS_MAX_DEFAULT, 5_000);
    assert.equal(validateConfig({ readyLagMsMax: 250 }).readyLagMsMax, 250);
    assert.throws(() => validateConfig({ readyLagMsMax: -1 }), /readyLagMsMax \(--ready-max-lag-ms\) must be an integer from 0/);
    const result = await runCli(['serve', '--ready-max-lag-ms', 'soon']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--ready-max-lag-ms must be a non-negative integer, got "soon"/);
  });
});

describe('status: what a token without admin learns of damaged data', () => {
  // Found by review: the damage reports went to admin only (d66195d), but a halted replica's lastFailure quoted the same
  // DATA_CORRUPTED message, key name and all, to any token; so did an upstream's refusal for its own damaged data.
  const status = {
    seq: 7,
    storage: { sound: false, damageMet: 1, damage: [{ what: 'key "secret/db"', message: 'checksum mismatch' }] },
    replication: { phase: 'halted', lastFailure: 'DATA_CORRUPTED: damaged data on this node: key "secret/db": checksum mismatch; read from another node' },
  };
  const reader = { name: 'dashboard', id: 'a'.repeat(16), scopes: parseScopes(['read:app/']) };
  const admin = { name: 'ops', id: 'b'.repeat(16), scopes: parseScopes(['admin']) };

  test('status: the damaged key is named to admin (and with auth off), never to another token', () => {
    assert.deepEqual(statusFor(admin, status), status);
    assert.deepEqual(statusFor(undefined, status), status);
    const seen = statusFor(reader, status);
    assert.ok(!JSON.stringify(seen).includes('secret/db'), JSON.stringify(seen));
    assert.deepEqual(seen.storage, { sound: false, damageMet: 1, damage: null });
    assert.equal((seen.replication as { lastFailure: string }).lastFailure, 'DATA_CORRUPTED: damaged data (where: in the status an admin token reads)');
    // An upstream's refusal for its damaged data, the same way; other failures as they are.
    const refused = { ...status, replication: { phase: 'connecting', lastFailure: 'upstream refused: UNAVAILABLE: damaged data on this node: head record: bad length' } };
    assert.match((statusFor(reader, refused).replication as { lastFailure: string }).lastFailure, /^upstream refused: UNAVAILABLE: damaged data \(where: /);
    const other = { ...status, replication: { phase: 'connecting', lastFailure: 'connect ECONNREFUSED 127.0.0.1:9' } };
    assert.deepEqual(statusFor(reader, other).replication, other.replication);
    // The root has no replication object.
    assert.equal(statusFor(reader, { ...status, replication: null }).replication, null);
  });
});
