/**
 * The benchmark scripts' command lines: an unknown option or a bad number is one line naming it and exit code 2,
 * before anything starts (no node, no data directory, no stack trace); `--help` prints the script's description.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const BENCH_DIR = fileURLToPath(new URL('../bench/', import.meta.url));
const SCRIPTS = ['node-bench', 'watch-bench', 'propagation-bench', 'wire-client-bench', 'local-read-bench', 'lmdb-flags-bench', 'lmdb-replay-bench', 'builds-ab'];

function run(script: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [`${BENCH_DIR}${script}.js`, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

test('bench scripts: an unknown option is one line on stderr and exit code 2', () => {
  for (const script of SCRIPTS) {
    const { status, stdout, stderr } = run(script, '--no-such-option');
    assert.equal(status, 2, `${script}: ${stderr}`);
    assert.equal(stdout, '', script);
    assert.match(stderr, /^bench[:\w-]*: Unknown option '--no-such-option' \(--help describes the options\)\n$/, script);
  }
});

test('bench scripts: a bad number or list item names its option', () => {
  const cases: [string, string[], RegExp][] = [
    ['node-bench', ['--runs', '0'], /--runs must be within 1\.\.1000, got 0/],
    ['node-bench', ['--seconds', 'x'], /--seconds must be a whole number, got "x"/],
    ['node-bench', ['--only', 'put,nope'], /--only takes put, txn, get, wire-put, wire-get, local, bare-get, got "nope"/],
    ['node-bench', ['--compare'], /--compare measures what --tls, --auth or --sign cost/],
    ['watch-bench', ['--shared', '1.5'], /--shared must be a number within 0\.\.1, got "1\.5"/],
    ['local-read-bench', ['--clients=-3'], /--clients must be a whole number, got "-3"/],
    ['lmdb-replay-bench', ['--keys', '1e6'], /--keys must be a whole number, got "1e6"/],
    ['propagation-bench', ['--skip', 'everything'], /--skip takes latency and sustained, got "everything"/],
    ['builds-ab', [], /--builds DIR,DIR\[,\.\.\.\] is required/],
    ['builds-ab', ['--builds', '/nonexistent-a,/nonexistent-b'], /\/nonexistent-a has no dist\/bin\/mercury\.js: run npm run build there first/],
    ['builds-ab', ['--builds', '.,.', '--workload', 'get'], /--workload takes wire-put or put, got "get"/],
  ];
  for (const [script, args, message] of cases) {
    const { status, stderr } = run(script, ...args);
    assert.equal(status, 2, `${script} ${args.join(' ')}: ${stderr}`);
    assert.match(stderr, message, `${script} ${args.join(' ')}`);
    assert.doesNotMatch(stderr, /\n {4}at /, 'no stack trace');
  }
});

test('bench scripts: --help prints the description at the top of the script, exit code 0', () => {
  for (const script of SCRIPTS) {
    const { status, stdout } = run(script, '--help');
    assert.equal(status, 0, script);
    assert.match(stdout, /^`(npm run bench|node dist\/bench\/)/, script);
    assert.doesNotMatch(stdout, /^\s*\*/m, `${script}: comment marks stripped`);
  }
});
