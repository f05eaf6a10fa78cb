/**
 * TLS credentials without sockets: the files are polled on the clock and reloaded when they change (a certificate
 * manager's rename swap included), a bad set keeps the previous one, and which hosts count as loopback.
 */
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { silentLogger, type Logger } from '../src/logging/index.js';
import { TLS_RELOAD_POLL_MS, TlsCredentials, isLoopbackHost, tlsFailureReason, type TlsMaterial } from '../src/net/index.js';
import { testCertificates } from './support/certs.js';
import { ManualClock } from './support/manual-clock.js';
import { makeTempDir, removeDir, serveRefused } from './support/process.js';

const certs = testCertificates();
const dir = makeTempDir('tls-credentials');
after(() => removeDir(dir));

test('tls credentials: a changed file is picked up at the next poll; a key that does not match keeps the old pair', () => {
  const paths = { certPath: join(dir, 'node.pem'), keyPath: join(dir, 'node-key.pem'), caPath: join(dir, 'ca.pem') };
  copyFileSync(certs.node.certPath, paths.certPath);
  copyFileSync(certs.node.keyPath, paths.keyPath);
  copyFileSync(certs.ca.certPath, paths.caPath);
  const clock = new ManualClock();
  const credentials = new TlsCredentials(paths, silentLogger, clock);
  const reloaded: TlsMaterial[] = [];
  credentials.onReload((material) => reloaded.push(material));
  credentials.watch();
  clock.advance(TLS_RELOAD_POLL_MS * 3);
  assert.equal(reloaded.length, 0, 'unchanged files are not reloaded');

  // A certificate manager writes the new certificate beside the old one and renames it into place.
  copyFileSync(certs.otherNode.certPath, join(dir, 'next.pem'));
  renameSync(join(dir, 'next.pem'), paths.certPath);
  clock.advance(TLS_RELOAD_POLL_MS);
  assert.equal(reloaded.length, 0);
  assert.equal(credentials.reloadFailures, 1, 'the new certificate does not go with the old key');
  assert.equal(credentials.current().cert.toString(), copyOf(certs.node.certPath));

  copyFileSync(certs.otherNode.keyPath, paths.keyPath);
  clock.advance(TLS_RELOAD_POLL_MS);
  assert.equal(reloaded.length, 1);
  assert.equal(credentials.reloads, 1);
  assert.equal(credentials.current().cert.toString(), copyOf(certs.otherNode.certPath));
  credentials.close();
});

function copyOf(path: string): string {
  return new TlsCredentials({ certPath: path, keyPath: path.replace(/\.pem$/, '-key.pem'), caPath: certs.ca.certPath }, silentLogger).current().cert.toString();
}

test('tls credentials: unreadable or mismatched files at start are CONFIG_INVALID naming the flag', () => {
  assert.throws(() => new TlsCredentials({ certPath: join(dir, 'missing.pem'), keyPath: certs.node.keyPath, caPath: certs.ca.certPath }, silentLogger), {
    code: 'CONFIG_INVALID',
    message: /--tls-cert .*missing\.pem cannot be read/,
  });
  assert.throws(() => new TlsCredentials({ certPath: certs.node.certPath, keyPath: certs.client.keyPath, caPath: certs.ca.certPath }, silentLogger), {
    code: 'CONFIG_INVALID',
    message: /--tls-key .* does not go with --tls-cert/,
  });
});

test('tls credentials: a CA bundle cut short or damaged inside a certificate is refused, naming --tls-ca, at start (a real serve) and on reload (found by review: OpenSSL kept the CAs before it without a word)', async () => {
  const bundle = Buffer.concat([readFileSync(certs.otherCa.certPath), readFileSync(certs.ca.certPath)]);
  const second = bundle.indexOf('-----BEGIN CERTIFICATE-----', 1);
  const cut = join(dir, 'ca-cut.pem');
  writeFileSync(cut, bundle.subarray(0, second + 200)); // a copy interrupted inside the cluster CA
  const refused = await serveRefused(join(dir, 'cut-data'), ['--tls-cert', certs.node.certPath, '--tls-key', certs.node.keyPath, '--tls-ca', cut]);
  assert.deepEqual({ code: refused.code, signal: refused.signal }, { code: 2, signal: null }, refused.stderr);
  assert.match(refused.stderr, /CONFIG_INVALID: --tls-ca \S+ca-cut\.pem is cut short: 1 of its 2 PEM blocks have no END line; give the whole CA file/);

  const damaged = Buffer.from(bundle);
  damaged.fill('A', second + 100, second + 300); // whole, but not a certificate any more
  const paths = { certPath: certs.node.certPath, keyPath: certs.node.keyPath, caPath: join(dir, 'ca-bundle.pem') };
  writeFileSync(paths.caPath, bundle);
  const clock = new ManualClock();
  const credentials = new TlsCredentials(paths, silentLogger, clock);
  credentials.watch();
  writeFileSync(paths.caPath, damaged);
  clock.advance(TLS_RELOAD_POLL_MS);
  assert.equal(credentials.reloadFailures, 1);
  assert.ok(credentials.current().ca.equals(bundle), 'the whole bundle is kept');
  assert.throws(() => new TlsCredentials(paths, silentLogger), { code: 'CONFIG_INVALID', message: /--tls-ca \S+: certificate 2 of 2 is damaged/ });
  credentials.close();
});

test('tls credentials: a certificate chain or key half-written, or damaged, at a reload keeps the previous pair, and the log line names the file at fault (audit, 2026-12-07: each was "--tls-key does not go with --tls-cert", or "--tls-cert or --tls-ca")', () => {
  const paths = { certPath: join(dir, 'half.pem'), keyPath: join(dir, 'half-key.pem'), caPath: join(dir, 'half-ca.pem') };
  const chain = Buffer.concat([readFileSync(certs.node.certPath), readFileSync(certs.ca.certPath)]);
  const key = readFileSync(certs.node.keyPath);
  writeFileSync(paths.certPath, chain);
  writeFileSync(paths.keyPath, key, { mode: 0o600 });
  copyFileSync(certs.ca.certPath, paths.caPath);
  const errors: string[] = [];
  const logger: Logger = { log: (level, message, fields) => void (level === 'error' && errors.push(`${message}: ${String(fields?.error)}`)), child: () => logger };
  const clock = new ManualClock();
  const credentials = new TlsCredentials(paths, logger, clock);
  credentials.watch();
  const second = chain.indexOf('-----BEGIN CERTIFICATE-----', 1);
  const cases: { file: string; bytes: Buffer; says: RegExp }[] = [
    // A chain written in place, polled between its two certificates: OpenSSL says "bad end line", of no file.
    { file: paths.certPath, bytes: chain.subarray(0, second + 100), says: /--tls-cert \S+half\.pem is cut short: 1 of its 2 PEM blocks have no END line; give the whole file/ },
    { file: paths.certPath, bytes: Buffer.from('not a certificate\n'), says: /--tls-cert \S+half\.pem is not a PEM certificate \(.*\); give the certificate file/ },
    { file: paths.keyPath, bytes: key.subarray(0, 60), says: /--tls-key \S+half-key\.pem is cut short: 1 of its 1 PEM blocks have no END line/ },
    { file: paths.keyPath, bytes: Buffer.alloc(0), says: /--tls-key \S+half-key\.pem is not a PEM private key \(.*\); give the certificate's key file/ },
    { file: paths.keyPath, bytes: readFileSync(certs.client.keyPath), says: /--tls-key \S+half-key\.pem does not go with --tls-cert \S+half\.pem/ },
  ];
  for (const [index, { file, bytes, says }] of cases.entries()) {
    writeFileSync(file, bytes);
    clock.advance(TLS_RELOAD_POLL_MS);
    assert.equal(credentials.reloadFailures, index + 1, String(says));
    assert.ok(credentials.current().cert.equals(chain) && credentials.current().key.equals(key), 'the previous pair is kept');
    assert.match(errors.at(-1) ?? '', new RegExp(`^TLS reload failed; still using the previous certificate: ${says.source}`));
    writeFileSync(file, file === paths.certPath ? chain : key);
    clock.advance(TLS_RELOAD_POLL_MS);
    assert.equal(credentials.reloads, index + 1, 'the whole file is taken again');
  }
  credentials.close();
});

test('tls: loopback hosts are 127.0.0.0/8, ::1 and localhost; wildcard and other addresses are not', () => {
  for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopbackHost(host), true, host);
  for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '128.0.0.1', '::ffff:10.0.0.1']) assert.equal(isLoopbackHost(host), false, host);
});

test('tls: handshake failures map to stable reasons', () => {
  assert.equal(tlsFailureReason(new Error('tlsv1 alert unknown ca')), 'untrusted_certificate');
  assert.equal(tlsFailureReason(new Error('sslv3 alert certificate expired')), 'certificate_expired');
  assert.equal(tlsFailureReason(Object.assign(new Error('wrong version number'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' })), 'not_tls');
  assert.equal(tlsFailureReason(new Error('socket hang up')), 'aborted');
  assert.equal(tlsFailureReason(new Error('TLS handshake timeout')), 'timeout');
  assert.equal(tlsFailureReason(new Error('something else')), 'handshake_failed');
});

test('tls credentials: a --tls-key file its group or others may read is named in a warning, at start and at a reload', () => {
  const paths = { certPath: join(dir, 'loose.pem'), keyPath: join(dir, 'loose-key.pem'), caPath: join(dir, 'loose-ca.pem') };
  copyFileSync(certs.node.certPath, paths.certPath);
  copyFileSync(certs.node.keyPath, paths.keyPath);
  copyFileSync(certs.ca.certPath, paths.caPath);
  const lines: string[] = [];
  const logger: Logger = { log: (level, message) => void (level === 'warn' && lines.push(message)), child: () => logger };
  chmodSync(paths.keyPath, 0o600);
  const credentials = new TlsCredentials(paths, logger);
  assert.equal(lines.length, 0, 'a key file of mode 0600 is not named');
  chmodSync(paths.keyPath, 0o644);
  assert.equal(credentials.reload('test'), true);
  assert.ok(
    lines.some((line) => line.includes('--tls-key') && line.includes('0644') && line.includes(`chmod 600 ${paths.keyPath}`)),
    lines.join('\n'),
  );
});
