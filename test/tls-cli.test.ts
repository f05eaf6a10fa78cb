/**
 * TLS with real processes: `mercury serve --tls-*`, the client commands with `--ca` / `$MERCURY_CA` (and a client
 * certificate), a replica process over mutual TLS, SIGHUP, and the refusal to listen beyond loopback unprotected.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { clientTls, testCertificates } from './support/certs.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { waitUntil } from './support/http.js';
import { connect } from '../src/client/index.js';

const certs = testCertificates();
const TLS_ARGS = ['--tls-cert', certs.node.certPath, '--tls-key', certs.node.keyPath, '--tls-ca', certs.ca.certPath];

describe('tls - the CLI', () => {
  const dir = makeTempDir('tls-cli');
  const running: ServeProcess[] = [];
  after(async () => {
    await Promise.all(running.map((node) => stopProcess(node.child)));
    removeDir(dir);
  });
  let root: ServeProcess;

  test('tls cli: serve --tls-* prints an https URL; put and get with --ca, $MERCURY_CA and a client certificate', async () => {
    root = await startServe(join(dir, 'root'), TLS_ARGS);
    running.push(root);
    assert.match(root.url, /^https:\/\//);
    const put = await runCli(['put', 'cli/key', 'over-tls', '--url', root.url, '--ca', certs.ca.certPath]);
    assert.equal(put.code, 0, put.stderr);
    const get = await runCli(['get', 'cli/key', '--url', root.url], { env: { MERCURY_CA: certs.ca.certPath, MERCURY_CERT: certs.client.certPath, MERCURY_KEY: certs.client.keyPath } });
    assert.equal(get.code, 0, get.stderr);
    assert.equal(get.stdout.toString(), 'over-tls');
  });

  test('tls cli: without the CA the command exits 3 saying to pass --ca; a half client certificate is bad usage', async () => {
    const result = await runCli(['get', 'cli/key', '--url', root.url], { env: { MERCURY_CA: '' } });
    assert.equal(result.code, 3);
    assert.match(result.stderr, /not signed by a CA this client trusts: pass the cluster CA \(mercury --ca CA\.pem or MERCURY_CA/);
    const half = await runCli(['get', 'cli/key', '--url', root.url, '--ca', certs.ca.certPath, '--cert', certs.client.certPath]);
    assert.equal(half.code, 2);
    assert.match(half.stderr, /--cert and --key go together/);
  });

  test('tls cli: a --ca bundle cut short is refused naming the flag, not taken as the CAs before the cut', async () => {
    // Found by review: OpenSSL keeps the certificates of a CA file up to the first it cannot read, so a bundle of two
    // CAs cut inside the second (the cluster CA) failed later as "not signed by a CA this client trusts", naming no file.
    const bundle = Buffer.concat([readFileSync(certs.otherCa.certPath), readFileSync(certs.ca.certPath)]);
    const cut = join(dir, 'ca-cut.pem');
    writeFileSync(cut, bundle.subarray(0, bundle.indexOf('-----BEGIN CERTIFICATE-----', 1) + 200));
    for (const how of [{ args: ['--ca', cut], env: {} }, { args: [], env: { MERCURY_CA: cut } }]) {
      const result = await runCli(['get', 'cli/key', '--url', root.url, ...how.args], { env: how.env });
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /--ca \(or \$MERCURY_CA\) \S+ca-cut\.pem is cut short: 1 of its 2 PEM blocks have no END line; give the whole CA file/);
    }
    // The whole bundle works.
    const whole = join(dir, 'ca-whole.pem');
    writeFileSync(whole, bundle);
    const get = await runCli(['get', 'cli/key', '--url', root.url, '--ca', whole]);
    assert.equal(get.code, 0, get.stderr);
  });

  test('tls cli: a replica process follows over mutual TLS and forwards a write from the CLI', async () => {
    const replica = await startServe(join(dir, 'replica'), [...TLS_ARGS, '--upstream', root.replication]);
    running.push(replica);
    const client = connect(replica.url, clientTls());
    await waitUntil('the replica streams', async () => ((await client.status()) as unknown as { replication: { phase: string } }).replication.phase === 'streaming');
    const put = await runCli(['put', 'cli/forwarded', 'yes', '--url', replica.url, '--ca', certs.ca.certPath]);
    assert.equal(put.code, 0, put.stderr);
    assert.equal((await connect(root.url, clientTls()).get('cli/forwarded'))?.value.toString(), 'yes');
  });

  test('tls cli: SIGHUP reloads the TLS files and the node keeps serving', async () => {
    let output = '';
    root.child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    root.child.kill('SIGHUP');
    await waitUntil('the node reports the reload', () => Promise.resolve(output.includes('received SIGHUP: TLS files reloaded')));
    const get = await runCli(['get', 'cli/key', '--url', root.url, '--ca', certs.ca.certPath]);
    assert.equal(get.stdout.toString(), 'over-tls');
  });

  test('tls cli: serve refuses 0.0.0.0 without TLS and authentication (exit 2, the flags named), and runs with --insecure', async () => {
    const refused = await runCli(['serve', '--data-dir', join(dir, 'open'), '--listen', '0.0.0.0:0', '--advertise-url', 'http://node.example:7070']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /CONFIG_INVALID: refusing to listen on 0\.0\.0\.0:0, 0\.0\.0\.0:0 and 0\.0\.0\.0:0 without TLS \(--tls-cert, --tls-key, --tls-ca\).*--insecure/);
    const open = await startServe(join(dir, 'insecure'), ['--listen', '0.0.0.0:0', '--advertise-url', 'http://node.example:7070', '--insecure']);
    running.push(open);
    assert.match(open.url, /^http:\/\/0\.0\.0\.0:\d+$/);
  });
});
