import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ETCD_TXN_OPS_MAX, UsageError, WORKLOAD_ORDER_DEFAULT, commandLine, parsePeersArgs } from '../bench/peers/args.js';

test('peers args: defaults are short runs of every workload in the order of priority', () => {
  const options = parsePeersArgs([]);
  assert.deepEqual(options.workloads, WORKLOAD_ORDER_DEFAULT);
  assert.deepEqual(options.systems, ['mercury', 'etcd', 'redis']);
  assert.equal(options.runs, 5);
  assert.equal(options.seconds, 3);
  assert.equal(options.clients, 64);
  assert.equal(options.valueBytes, 256);
  assert.equal(options.batchOps, ETCD_TXN_OPS_MAX);
  assert.deepEqual(options.tree, [4, 16]);
  assert.equal(options.install, false);
  assert.ok(Object.isFrozen(options));
});

test('peers args: lists and numbers are parsed in the order given', () => {
  const options = parsePeersArgs(['--workloads', '3,1', '--systems', 'mercury,redis', '--runs', '7', '--seconds', '0.5', '--tree', '2,4,8', '--install']);
  assert.deepEqual(options.workloads, [3, 1]);
  assert.deepEqual(options.systems, ['mercury', 'redis']);
  assert.equal(options.runs, 7);
  assert.equal(options.seconds, 0.5);
  assert.deepEqual(options.tree, [2, 4, 8]);
  assert.equal(options.install, true);
});

test('peers args: a bad option names itself and its rule', () => {
  const cases: [string[], RegExp][] = [
    [['--workloads', '1,8'], /--workloads items must be within 1\.\.7/],
    [['--workloads', '1,,2'], /--workloads .*without empty items/],
    [['--workloads', '1,1'], /--workloads names an item twice/],
    [['--systems', 'etcd,redis'], /--systems must include mercury/],
    [['--systems', 'mercury,consul'], /--systems items must be among/],
    [['--runs', '0'], /--runs must be within 1\.\./],
    [['--runs', '2.5'], /--runs must be a whole number/],
    [['--seconds=-1'], /--seconds must be a number above 0/],
    [['--batch-ops', '129'], /--batch-ops must be within 1\.\.128/],
    [['--batch-ops', '100', '--keys', '50'], /--batch-ops must not exceed --keys/],
    [['--watchers', '4', '--watch-connections', '8'], /--watch-connections must not exceed --watchers/],
    [['--bootstrap-keys', '0'], /--bootstrap-keys must be within 1\.\./],
    [['--bogus'], /Unknown option '--bogus'/],
    [['extra'], /positional/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parsePeersArgs(argv), (error: unknown) => error instanceof UsageError && message.test(error.message), argv.join(' '));
  }
});

test('peers args: the command line for the page reproduces the run', () => {
  assert.equal(commandLine([]), 'npm run bench:peers');
  assert.equal(commandLine(['--workloads', '1,2', '--seconds', '3']), 'npm run bench:peers -- --workloads 1,2 --seconds 3');
  assert.equal(commandLine(['--output', "it's here.md"]), "npm run bench:peers -- --output 'it'\\''s here.md'");
});
