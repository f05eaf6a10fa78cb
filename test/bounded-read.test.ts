/**
 * Files named by flags and environment variables are read bounded (src/fs/bounded-read.ts): a FIFO is refused at
 * once instead of blocking the process, /dev/zero or an oversized file is refused instead of read until memory runs
 * out, and a TLS file swapped for either on a running node keeps the previous certificate (found by review).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isMercuryError } from '../src/errors/index.js';
import { readFileBounded } from '../src/fs/bounded-read.js';
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
  refused(() => readFileBounded(link, { what: 'state', bytesMax: 100, noFollow: true }), 'CONFIG_INVALID', /ELOOP/);
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
