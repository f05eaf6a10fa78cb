/**
 * Files named by flags and environment variables are read bounded (src/fs/bounded-read.ts): a FIFO is refused at
 * once instead of blocking the process, /dev/zero or an oversized file is refused instead of read until memory runs
 * out, and a TLS file swapped for either on a running node keeps the previous certificate (found by review).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isMercuryError } from '../src/errors/index.js';
import { readFileBounded, secretFileWarning } from '../src/fs/bounded-read.js';
import { silentLogger } from '../src/logging/index.js';
import { TLS_RELOAD_POLL_MS, TlsCredentials } from '../src/net/index.js';
import { testCertificates } from './support/certs.js';
import { ManualClock } from './support/manual-clock.js';
import { makeTempDir, removeDir, runCli } from './support/process.js';

const dir = makeTempDir('bounded-read');
after(() => removeDir(dir));

function fifo(name: string): string {
  const path = join(dir, name);
  execFileSync('mkfifo', [path]);
  return path;
}

function refused(read: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(read, (error: unknown) => isMercuryError(error) && error.code === code && pattern.test(error.message));
}

// Found by an audit (2026-12-06): token and private key files were read whatever their mode, so a 0644 admin token or
// signing key on a shared host went unnoticed. Like ssh, a secret file of this user's that lets others in is named.
test('bounded read: a secret file this user owns whose mode lets its group or others in gets a warning naming it, its mode and chmod 600', () => {
  const file = join(dir, 'secret');
  writeFileSync(file, 'mcy_secret');
  const warnings = (mode: number, secret = true): { message: string; fields: { file: string; mode: string } }[] => {
    chmodSync(file, mode);
    const seen: { message: string; fields: { file: string; mode: string } }[] = [];
    const bytes = readFileBounded(file, { what: '--token-file', bytesMax: 100, ...(secret ? { secret: (message, fields) => seen.push({ message, fields }) } : {}) });
    assert.equal(bytes.toString(), 'mcy_secret', 'a warning, not a refusal: the file is read');
    return seen;
  };
  for (const mode of [0o644, 0o640, 0o604, 0o620, 0o601]) {
    const seen = warnings(mode);
    const shown = `0${mode.toString(8)}`;
    assert.equal(seen.length, 1, shown);
    assert.equal(seen[0]!.message, `--token-file ${file} holds a secret, and its mode ${shown} lets its group or others in: chmod 600 ${file}`);
    assert.deepEqual(seen[0]!.fields, { file, mode: shown });
  }
  assert.deepEqual(warnings(0o600), []);
  assert.deepEqual(warnings(0o400), []);
  assert.deepEqual(warnings(0o644, false), [], 'only files said to hold a secret are checked');
  // A file another user owns (a Kubernetes Secret volume is root's, mode 0440 or 0644) is that user's choice, as ssh
  // has it: this process could not chmod it.
  const uid = process.getuid?.() ?? 0;
  const stat = { uid: uid + 1, mode: 0o100644 } as Parameters<typeof secretFileWarning>[0];
  assert.equal(secretFileWarning(stat, '--signing-key', file), undefined);
  assert.match(secretFileWarning({ ...stat, uid }, '--signing-key', file)?.message ?? '', /mode 0644 lets its group or others in: chmod 600/);
});

test('bounded read: a regular file is read whole; a FIFO, a device, a directory, a file over the limit are refused', () => {
  const file = join(dir, 'token');
  writeFileSync(file, 'x'.repeat(100));
  assert.equal(readFileBounded(file, { what: '--token-file', bytesMax: 100 }).toString(), 'x'.repeat(100));
  refused(() => readFileBounded(file, { what: '--token-file', bytesMax: 99 }), 'CONFIG_INVALID', /--token-file .* is 100 bytes, over the 99 bytes/);
  refused(() => readFileBounded(fifo('a.fifo'), { what: '--ca', bytesMax: 100 }), 'CONFIG_INVALID', /--ca .* is a FIFO/);
  refused(() => readFileBounded('/dev/zero', { what: '--key', bytesMax: 100 }), 'CONFIG_INVALID', /--key \/dev\/zero is a character device/);
  refused(() => readFileBounded(dir, { what: '--key', bytesMax: 100 }), 'CONFIG_INVALID', /is a directory/);
  refused(() => readFileBounded(join(dir, 'missing'), { what: '--key', bytesMax: 100, code: 'INVALID_ARGUMENT' }), 'INVALID_ARGUMENT', /cannot be read: ENOENT/);
  const link = join(dir, 'link');
  symlinkSync(file, link);
  assert.equal(readFileBounded(link, { what: '--key', bytesMax: 100 }).length, 100, 'a link a flag names is followed');
  refused(() => readFileBounded(link, { what: 'state', bytesMax: 100, noFollow: true }), 'CONFIG_INVALID', /state \S+link is a symbolic link; give the path of a regular file/);
});

test('bounded read: the CLI refuses a FIFO or /dev/zero as --token-file, $MERCURY_TOKEN_FILE, --ca, --admin-token-file, --signing-key at once, exit 2', async () => {
  const pipe = fifo('token.fifo');
  const serve = ['serve', '--data-dir', join(dir, 'data'), '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--wire-listen', '127.0.0.1:0'];
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['status', '--url', 'http://127.0.0.1:9', '--token-file', pipe], {}, /--token-file .* is a FIFO/],
    [['status', '--url', 'http://127.0.0.1:9', '--token-file', '/dev/zero'], {}, /--token-file \/dev\/zero is a character device/],
    [['status', '--url', 'http://127.0.0.1:9'], { MERCURY_TOKEN_FILE: '/dev/zero' }, /\$MERCURY_TOKEN_FILE \/dev\/zero is a character device/],
    [['status', '--url', 'https://127.0.0.1:9', '--ca', '/dev/zero'], {}, /--ca \(or \$MERCURY_CA\) \/dev\/zero is a character device/],
    [['put', 'k', '--url', 'http://127.0.0.1:9', '--file', pipe], {}, /--file .* is a FIFO/],
    [[...serve, '--admin-token-file', '/dev/zero'], {}, /--admin-token-file \/dev\/zero is a character device/],
    [[...serve, '--signing-key', pipe], {}, /--signing-key .* is a FIFO/],
  ];
  for (const [args, env, pattern] of cases) {
    const result = await runCli(args, { env });
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /CONFIG_INVALID/);
    assert.match(result.stderr, pattern);
  }
});

test('bounded read: a TLS key swapped for a FIFO or a link to /dev/zero is a failed reload that keeps the previous certificate', () => {
  const certs = testCertificates();
  const paths = { certPath: join(dir, 'node.pem'), keyPath: join(dir, 'node-key.pem'), caPath: join(dir, 'ca.pem') };
  copyFileSync(certs.node.certPath, paths.certPath);
  copyFileSync(certs.node.keyPath, paths.keyPath);
  copyFileSync(certs.ca.certPath, paths.caPath);
  const clock = new ManualClock();
  const credentials = new TlsCredentials(paths, silentLogger, clock);
  const before = credentials.current();
  credentials.watch();
  rmSync(paths.keyPath);
  renameSync(fifo('key.fifo'), paths.keyPath);
  clock.advance(TLS_RELOAD_POLL_MS);
  assert.equal(credentials.reloadFailures, 1);
  rmSync(paths.keyPath);
  symlinkSync('/dev/zero', paths.keyPath);
  clock.advance(TLS_RELOAD_POLL_MS);
  assert.equal(credentials.reloadFailures, 2);
  assert.equal(credentials.current(), before);
  credentials.close();
});
