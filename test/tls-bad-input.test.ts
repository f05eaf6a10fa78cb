/**
 * TLS bad input: a wrong CA, an expired certificate, plaintext on a TLS port and TLS on a plaintext port, on HTTP and
 * on replication. Each gets an error that says what to do on the client's side, and a log line and a count on the
 * node's (`mercury_tls_rejected_total{port,reason}`), which keeps serving. Also: no non-loopback listener without TLS
 * and authentication unless `--insecure`.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { after, describe, test } from 'node:test';
import { connect, ServerError, UnavailableError, type ClientOptions } from '../src/client/index.js';
import { validateConfig, type NodeConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { clientTls, testCertificates, tlsPaths } from './support/certs.js';
import { makeTempDir, removeDir } from './support/process.js';
import { waitUntil } from './support/http.js';
import { watchUrl } from './support/watch.js';
import { WebSocket } from 'ws';

const certs = testCertificates();

function rejectedCount(node: MercuryNode, port: string, reason: string): number {
  const line = node.metrics
    .render()
    .split('\n')
    .find((candidate) => candidate.startsWith('mercury_tls_rejected_total{') && candidate.includes(`port="${port}"`) && candidate.includes(`reason="${reason}"`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => assert.fail('expected a failure'),
    (error: unknown) => error as Error,
  );
}

describe('tls - bad input on HTTP and replication', () => {
  const dir = makeTempDir('tls-bad');
  const nodes: MercuryNode[] = [];
  let count = 0;
  const start = async (config: Partial<NodeConfig>): Promise<MercuryNode> => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, `node-${count++}`), host: '127.0.0.1', port: 0, ...config }), { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(node);
    return node;
  };
  after(async () => {
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });
  const get = (url: string, options: ClientOptions): Promise<unknown> => connect(url, { attemptsMax: 1, ...options }).get('k');

  let root: MercuryNode;
  let plain: MercuryNode;

  test('tls bad input: an HTTP client with the wrong CA is told to pass the cluster CA; the node counts it and serves others', async () => {
    root = await start({ tls: tlsPaths() });
    await connect(root.url, { ca: clientTls().ca }).put('k', 'v');
    const error = await failure(get(root.url, { ca: clientTls(undefined, certs.otherCa).ca }));
    assert.ok(error instanceof UnavailableError, String(error));
    assert.match(error.message, /not signed by a CA this client trusts: pass the cluster CA \(mercury --ca/);
    // The write was never sent: the handshake failed first.
    assert.equal(error.requestSent, false);
    // Node's TLS client closes without an alert when it distrusts the server: the node sees an aborted handshake.
    await waitUntil('the node counted the aborted handshake', () => Promise.resolve(rejectedCount(root, 'http', 'aborted') === 1));
    assert.equal(((await connect(root.url, { ca: clientTls().ca }).get('k')) as { value: Buffer }).value.toString(), 'v');
  });

  test('tls bad input: plaintext HTTP on the TLS port is answered in plaintext: use https', async () => {
    const error = await failure(get(root.url.replace('https:', 'http:'), {}));
    assert.ok(error instanceof ServerError, String(error));
    assert.equal(error.status, 400);
    assert.match(error.message, /this port serves HTTPS: use an https:\/\/ URL and trust the cluster CA/);
    assert.equal(rejectedCount(root, 'http', 'not_tls'), 1);
  });

  test('tls bad input: a connection silent after its handshake, and a stalled handshake, are closed at the first-byte timeout; an open watch is not', async () => {
    // Before: the silent connection was never closed (the first-byte timer counted the handshake's bytes), and the
    // stalled handshake lasted Node's default of 120 s; each held a connection slot.
    const { firstByteTimeoutMs } = NODE_LIMITS_TEST.http;
    const port = Number(new URL(root.url).port);
    const timeoutsBefore = rejectedCount(root, 'http', 'timeout');
    const watch = new WebSocket(watchUrl(root.url), { ca: clientTls().ca, perMessageDeflate: false });
    watch.on('error', () => {});
    await once(watch, 'open');
    const started = performance.now();
    const silent = tls.connect({ host: '127.0.0.1', port, ca: clientTls().ca });
    silent.on('error', () => {});
    let silentClosedMs: number | undefined;
    silent.once('close', () => (silentClosedMs = performance.now()));
    await once(silent, 'secureConnect');
    // The 5-byte header of a ClientHello record, and nothing after it.
    const stalled = net.connect(port, '127.0.0.1', () => stalled.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])));
    stalled.on('error', () => {});
    let stalledClosed = false;
    stalled.once('close', () => (stalledClosed = true));
    await waitUntil(
      'the silent and the stalled connections are closed',
      () => Promise.resolve(silentClosedMs !== undefined && stalledClosed),
      10 * firstByteTimeoutMs + 5_000,
    );
    assert.ok(silentClosedMs! - started >= firstByteTimeoutMs - 50, `closed ${(silentClosedMs! - started).toFixed(0)} ms after the handshake began, before its timeout`);
    assert.ok(rejectedCount(root, 'http', 'timeout') > timeoutsBefore, 'the stalled handshake is counted as a timeout');
    // The watch was upgraded before either timer ran out, and is still served.
    assert.equal(watch.readyState, WebSocket.OPEN);
    watch.send(JSON.stringify({ type: 'subscribe', id: 1, prefixes: ['k'] }));
    const [answer] = (await once(watch, 'message')) as [Buffer];
    assert.equal((JSON.parse(answer.toString('utf8')) as { type: string }).type, 'subscribed');
    watch.close();
  });

  test('tls bad input: an https client on a plaintext port is told the node does not speak TLS', async () => {
    plain = await start({});
    const error = await failure(get(plain.url.replace('http:', 'https:'), { ca: clientTls().ca }));
    assert.ok(error instanceof UnavailableError, String(error));
    assert.match(error.message, /does not speak TLS on this port: use an http:\/\/ URL/);
    await waitUntil('the node counted the TLS client', () => Promise.resolve(rejectedCount(plain, 'http', 'tls_on_plaintext') === 1));
    await connect(plain.url).put('k', 'still serving');
  });

  test('tls bad input: a node with an expired certificate is refused by clients with a message to renew it', async () => {
    const expired = await start({ tls: tlsPaths(certs.expiredNode) });
    const error = await failure(get(expired.url, { ca: clientTls().ca }));
    assert.match(error.message, /outside its validity period: renew it on the node/);
    assert.equal((expired.status().tls as { enabled: boolean }).enabled, true);
  });

  /** Starts a replica of `upstream` and waits until its status names a failure matching `pattern`. */
  async function refusedReplica(upstream: MercuryNode, config: Partial<NodeConfig>, pattern: RegExp): Promise<void> {
    const replica = await start({ upstreams: [upstream.replicationAddress], ...config });
    await waitUntil(`the replica reports a failure matching ${pattern}`, () => Promise.resolve(pattern.test(replica.replicationClient?.status().lastFailure ?? '')));
    assert.notEqual(replica.replicationClient?.status().phase, 'streaming');
  }

  test('tls bad input: a child with a certificate from another CA is refused UNAUTHENTICATED, saying why', async () => {
    await refusedReplica(root, { tls: tlsPaths(certs.otherNode) }, /UNAUTHENTICATED: your certificate was rejected \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\).*signed by the cluster CA/);
    assert.ok(rejectedCount(root, 'replication', 'untrusted_certificate') >= 1);
  });

  test("tls bad input: a child that trusts another CA refuses the upstream's certificate", async () => {
    const before = rejectedCount(root, 'replication', 'untrusted_certificate');
    await refusedReplica(root, { tls: tlsPaths(certs.otherNode, certs.otherCa) }, /not signed by a CA this client trusts/);
    await waitUntil('the upstream counted the failed handshake', () => Promise.resolve(rejectedCount(root, 'replication', 'untrusted_certificate') > before));
  });

  test('tls bad input: a child with an expired certificate is refused, naming CERT_HAS_EXPIRED', async () => {
    await refusedReplica(root, { tls: tlsPaths(certs.expiredNode) }, /UNAUTHENTICATED: your certificate was rejected \(CERT_HAS_EXPIRED\)/);
    assert.ok(rejectedCount(root, 'replication', 'certificate_expired') >= 1);
  });

  test('tls bad input: a plaintext child on the TLS replication port is refused with the flags to use', async () => {
    await refusedReplica(root, {}, /UNAUTHENTICATED: this upstream requires mutual TLS: start the replica with --tls-cert, --tls-key and --tls-ca/);
    assert.ok(rejectedCount(root, 'replication', 'not_tls') >= 1);
  });

  test('tls bad input: a TLS child on a plaintext replication port learns that the upstream does not serve TLS', async () => {
    await refusedReplica(plain, { tls: tlsPaths() }, /TLS handshake: the node may not serve TLS on this port/);
    assert.ok(rejectedCount(plain, 'replication', 'tls_on_plaintext') >= 1);
  });

  test('tls bad input: after all of it, the upstream still serves a good child', async () => {
    const replica = await start({ upstreams: [root.replicationAddress], tls: tlsPaths() });
    await waitUntil('the good replica streams', () => Promise.resolve(replica.replicationClient?.status().phase === 'streaming'));
    await waitUntil('the good replica has the data', () => Promise.resolve(replica.store.head().seq === root.store.head().seq));
  });
});

describe('tls - secure unless told otherwise', () => {
  const dir = makeTempDir('tls-insecure');
  after(() => removeDir(dir));
  const config = (input: Partial<NodeConfig>): NodeConfig => validateConfig({ dataDir: join(dir, 'node'), port: 0, ...input });

  test('insecure: a node refuses a non-loopback HTTP address without TLS and authentication, naming the flags', async () => {
    const error = await failure(MercuryNode.start(config({ host: '0.0.0.0', advertiseUrl: 'http://node.example:7070' }), { auth: 'off', limits: NODE_LIMITS_TEST }));
    assert.equal((error as { code?: string }).code, 'CONFIG_INVALID');
    assert.match(error.message, /refusing to listen on 0\.0\.0\.0:0, 0\.0\.0\.0:0 and 0\.0\.0\.0:0 without TLS \(--tls-cert, --tls-key, --tls-ca\) and authentication \(--auth required\).*--insecure/);
  });

  test('insecure: the replication address counts too, and TLS alone is not enough while authentication is off', async () => {
    const error = await failure(MercuryNode.start(config({ host: '127.0.0.1', replicationHost: '0.0.0.0', replicationPort: 0, tls: tlsPaths() }), { auth: 'off', limits: NODE_LIMITS_TEST }));
    assert.match(error.message, /refusing to listen on 0\.0\.0\.0:0 without authentication \(--auth required\)/);
  });

  test('insecure: the wire address counts too', async () => {
    const error = await failure(MercuryNode.start(config({ host: '127.0.0.1', wireHost: '0.0.0.0', wirePort: 0 }), { auth: 'required', limits: NODE_LIMITS_TEST }));
    assert.match(error.message, /refusing to listen on 0\.0\.0\.0:0 without TLS \(--tls-cert, --tls-key, --tls-ca\):/);
  });

  test('insecure: --insecure lets it listen, and loopback needs nothing', async () => {
    const node = await MercuryNode.start(config({ host: '0.0.0.0', advertiseUrl: 'http://node.example:7070', insecure: true }), { auth: 'off', limits: NODE_LIMITS_TEST });
    await node.close();
    const local = await MercuryNode.start(config({ host: 'localhost' }), { auth: 'off', limits: NODE_LIMITS_TEST });
    await local.close();
  });
});
