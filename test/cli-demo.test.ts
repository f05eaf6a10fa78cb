/**
 * `mercury demo` (npm start) as a user runs it: a root and a replica with TLS and tokens, announced as one JSON line.
 * The demo's ports are fixed (7070 and up, as the README shows them), so this file runs one demo at a time.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCertificateAuthority } from '../src/net/tls-certs.js';
import { CLI_PATH, makeTempDir, removeDir, stopProcess } from './support/process.js';

const DEMO_START_TIMEOUT_MS = 30_000;

describe('cli demo', () => {
  let dir: string;

  before(() => {
    dir = makeTempDir('cli-demo');
  });

  after(() => {
    removeDir(dir);
  });

  /** Runs the demo until it announces its nodes; answers their names (with `text`, the announcement as printed). */
  async function demoNodes(text = false): Promise<string[]> {
    const stdout = await demoAnnouncement(text, 1);
    if (text) return [...stdout.matchAll(/^ {2}(root|replica-\d+) /gm)].map((match) => match[1]!);
    return (JSON.parse(stdout.split('\n')[0]!) as { nodes: { name: string }[] }).nodes.map((node) => node.name);
  }

  /** Runs the demo with `replicas` until it announces its nodes (as text, or one JSON line); answers what it printed. */
  async function demoAnnouncement(text: boolean, replicas: number): Promise<string> {
    const child = spawn(process.execPath, [CLI_PATH, 'demo', '--replicas', String(replicas), '--dir', dir, ...(text ? [] : ['--json'])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    try {
      const outcome = await new Promise<string>((resolve) => {
        const timer = setTimeout(() => resolve('timeout'), DEMO_START_TIMEOUT_MS);
        child.stdout.on('data', () => {
          if (!(text ? stdout.includes('Ctrl-C stops every node.') : stdout.includes('\n'))) return;
          clearTimeout(timer);
          resolve('announced');
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          resolve(`exited ${code}`);
        });
      });
      assert.equal(outcome, 'announced', `stderr: ${stderr}`);
      return stdout;
    } finally {
      // SIGTERM: the demo stops its nodes on it.
      await stopProcess(child, 'SIGTERM');
    }
  }

  test('cli demo: a root and a replica start and are announced (found by review: the replica refused the admin token until its snapshot brought the token records, and the demo stopped with UNAUTHENTICATED)', async () => {
    assert.deepEqual(await demoNodes(), ['root', 'replica-1']);
  });

  test('cli demo: started again after its token files were deleted, it revokes the tokens of those names and makes new ones (token names are unique)', async () => {
    rmSync(join(dir, 'demo-token'));
    rmSync(join(dir, 'replication-token'));
    assert.deepEqual(await demoNodes(), ['root', 'replica-1']);
    assert.ok(existsSync(join(dir, 'demo-token')) && existsSync(join(dir, 'replication-token')));
  });

  test('cli demo: one replica, announced as text (found by audit, 2026-12-07: the text named a third node and the demo died with a TypeError)', async () => {
    assert.deepEqual(await demoNodes(true), ['root', 'replica-1']);
  });

  test('cli demo: with two replicas, the read and the watch it suggests go to the replica the put does not (found by review: both named the leaf)', async () => {
    const stdout = await demoAnnouncement(true, 2);
    const url = (command: string): string | undefined => new RegExp(`npx mercury ${command} .*--url (\\S+)`).exec(stdout)?.[1];
    const [put, get, watch] = [url('put'), url('get'), url('watch')];
    assert.ok(put !== undefined && get !== undefined && watch !== undefined, stdout);
    assert.notEqual(get, put, stdout);
    assert.notEqual(watch, put, stdout);
  });

  // Found by audit: the demo read its own files with readFileSync; anyone who can write ./data/demo can plant files there.
  test('cli demo: a FIFO where its CA certificate goes is refused at once, naming it and what to do, never waited on', () => {
    const planted = join(dir, 'planted-fifo');
    mkdirSync(join(planted, 'tls'), { recursive: true });
    execFileSync('mkfifo', [join(planted, 'tls', 'ca.pem')]);
    const result = spawnSync(process.execPath, [CLI_PATH, 'demo', '--replicas', '1', '--dir', planted, '--json'], { encoding: 'utf8', timeout: DEMO_START_TIMEOUT_MS, killSignal: 'SIGKILL' });
    assert.equal(result.status, 1, `the demo hung or failed otherwise (signal ${result.signal}): ${result.stderr}`);
    assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: the demo's file \S+ca\.pem is a FIFO \(named pipe\); remove \S+tls and run the demo again: it makes new certificates/m);
  });

  test('cli demo: a FIFO where its CA key goes stops the certificate it was issuing, naming the files, never waits for ever', () => {
    const planted = join(dir, 'planted-key');
    createCertificateAuthority(join(planted, 'tls'), 'ca', 'Mercury demo CA');
    rmSync(join(planted, 'tls', 'ca-key.pem'));
    execFileSync('mkfifo', [join(planted, 'tls', 'ca-key.pem')]);
    const result = spawnSync(process.execPath, [CLI_PATH, 'demo', '--replicas', '1', '--dir', planted, '--json'], { encoding: 'utf8', timeout: 2 * DEMO_START_TIMEOUT_MS, killSignal: 'SIGKILL' });
    assert.equal(result.status, 1, `the demo hung or failed otherwise (signal ${result.signal}): ${result.stderr}`);
    assert.match(result.stderr, /^mercury: openssl x509 did not finish within 20 s: one of the files .*ca-key\.pem.* is not a regular file \(a FIFO\?\); remove it/m);
  });

  test('cli demo: a directory where a token file goes is refused, naming it, and the nodes started are stopped', () => {
    const planted = join(dir, 'planted-dir');
    mkdirSync(join(planted, 'replication-token'), { recursive: true });
    const result = spawnSync(process.execPath, [CLI_PATH, 'demo', '--replicas', '1', '--dir', planted, '--json'], { encoding: 'utf8', timeout: DEMO_START_TIMEOUT_MS, killSignal: 'SIGKILL' });
    assert.equal(result.status, 1, `signal ${result.signal}; stdout: ${result.stdout}; stderr: ${result.stderr}`);
    assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: the demo's file \S+replication-token is a directory; remove it and run the demo again: it makes a new token/m);
  });

  test('cli demo: a dangling link where a token file goes is refused, naming it, not taken for a missing file (review, 2026-12-07: a bare EEXIST, and a token made with no file)', () => {
    const planted = join(dir, 'planted-link');
    mkdirSync(planted, { recursive: true });
    symlinkSync(join(planted, 'nowhere'), join(planted, 'replication-token'));
    const result = spawnSync(process.execPath, [CLI_PATH, 'demo', '--replicas', '1', '--dir', planted, '--json'], { encoding: 'utf8', timeout: DEMO_START_TIMEOUT_MS, killSignal: 'SIGKILL' });
    assert.equal(result.status, 1, `signal ${result.signal}; stdout: ${result.stdout}; stderr: ${result.stderr}`);
    assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: the demo's file \S+replication-token is a symbolic link; remove it and run the demo again: it makes a new token/m);
  });
  test('cli demo: a folder of its directory it may not write is named by the file it makes there, not by that file\'s temporary name (left at stop 43: `ca-key.pem.tmp cannot be written`)', (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root: runs the demo as another user');
    const asNobody = ['--reuid=65534', '--regid=65534', '--clear-groups'];
    if (spawnSync('/usr/bin/setpriv', [...asNobody, 'test', '-r', CLI_PATH]).status !== 0) return t.skip(`nobody may not read ${CLI_PATH}`);
    // Outside the test's own directory (0700): nobody must reach it. The demo's directory is nobody's, its tls folder root's.
    const planted = mkdtempSync(join(tmpdir(), 'mercury-demo-foreign-'));
    try {
      chmodSync(planted, 0o755);
      mkdirSync(join(planted, 'demo', 'tls'), { recursive: true, mode: 0o755 });
      chownSync(join(planted, 'demo'), 65534, 65534);
      const result = spawnSync('/usr/bin/setpriv', [...asNobody, process.execPath, CLI_PATH, 'demo', '--replicas', '1', '--dir', join(planted, 'demo'), '--json'], {
        encoding: 'utf8',
        timeout: DEMO_START_TIMEOUT_MS,
        killSignal: 'SIGKILL',
      });
      assert.equal(result.status, 1, `signal ${result.signal}; stdout: ${result.stdout}; stderr: ${result.stderr}`);
      assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: \S+\/tls\/ca-key\.pem cannot be written \(EACCES: permission denied, open \S+\): the demo's directory \S+ and the files in it must be readable and writable by the user mercury runs as \(uid 65534\)/m);
    } finally {
      rmSync(planted, { recursive: true, force: true });
    }
  });
});
