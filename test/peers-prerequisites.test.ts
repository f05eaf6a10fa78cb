import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { findExecutable, findMissing, installCommand, missingMessage } from '../bench/peers/prerequisites.js';
import { ADAPTERS } from '../bench/peers/systems/index.js';

const required = [...ADAPTERS.mercury.requires, ...ADAPTERS.etcd.requires, ...ADAPTERS.redis.requires];

test('peers prerequisites: missing peers give one apt-get command with each package once', () => {
  const report = findMissing(required, (binary) => binary === 'redis-cli');
  assert.deepEqual(
    report.missing.map((item) => item.binary),
    ['etcd', 'redis-server'],
  );
  assert.deepEqual(report.packages, ['etcd-server', 'redis-server']);
  assert.deepEqual(installCommand(report.packages, true), ['apt-get', 'install', '-y', 'etcd-server', 'redis-server']);
  assert.deepEqual(installCommand(report.packages, false).slice(0, 2), ['sudo', 'apt-get']);
  const message = missingMessage(report, true);
  assert.match(message, /etcd and redis-server not found on PATH/);
  assert.match(message, /^ {2}apt-get install -y etcd-server redis-server$/m);
  assert.match(message, /--install/);
  assert.equal(findMissing(required, () => true).missing.length, 0);
  assert.match(missingMessage(findMissing(required, () => false), false), /^bench:peers: etcd, redis-server and redis-cli not found on PATH/);
  assert.match(missingMessage(findMissing(required, () => false), false), /^ {2}sudo apt-get install -y etcd-server redis-server redis-tools$/m);
});

test('peers prerequisites: every peer binary names its Debian package; Mercury needs none', () => {
  assert.deepEqual(ADAPTERS.mercury.requires, []);
  assert.deepEqual(
    [...ADAPTERS.etcd.requires, ...ADAPTERS.redis.requires].map((item) => `${item.binary}:${item.debianPackage}`),
    ['etcd:etcd-server', 'redis-server:redis-server', 'redis-cli:redis-tools'],
  );
});

test('peers prerequisites: executables are found on PATH only when executable', () => {
  const directory = mkdtempSync(join(tmpdir(), 'peers-path-'));
  try {
    writeFileSync(join(directory, 'etcd'), '#!/bin/sh\n');
    writeFileSync(join(directory, 'redis-server'), 'not executable');
    chmodSync(join(directory, 'etcd'), 0o755);
    chmodSync(join(directory, 'redis-server'), 0o644);
    assert.equal(findExecutable('etcd', `/nonexistent::${directory}`), join(directory, 'etcd'));
    // root may execute a file with no x bit at all, but not one with only read bits.
    assert.equal(findExecutable('redis-server', directory), undefined);
    assert.equal(findExecutable('missing', directory), undefined);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
