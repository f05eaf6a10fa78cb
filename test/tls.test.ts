/**
 * TLS: HTTPS and wss on the API, mutual TLS on replication, write forwarding over TLS, client certificates on HTTP,
 * and certificates reloaded without dropping connections. Real certificates (openssl, test/support/certs.ts), real
 * TLS sockets, in-process nodes on loopback.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { connect, type MercuryClient, type WatchEvent } from '../src/client/index.js';
import { validateConfig, type NodeConfig } from '../src/config/index.js';
import { clientCertificateName, readTlsMaterial } from '../src/net/index.js';
import { issueCertificate } from '../src/net/tls-certs.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { createHttpServer } from '../src/server/index.js';
import { clientTls, testCertificates, tlsPaths, LOOPBACK_HOSTS } from './support/certs.js';
import { makeTempDir, removeDir } from './support/process.js';
import { waitUntil } from './support/http.js';

const certs = testCertificates();

function streaming(node: MercuryNode): Promise<void> {
  return waitUntil('the replica streams from its upstream', () => Promise.resolve(node.replicationClient?.status().phase === 'streaming'));
}

/** The key of a watch event (a put or a delete). */
function eventKey(result: IteratorResult<WatchEvent>): string | undefined {
  const event = result.value as WatchEvent | undefined;
  return event !== undefined && 'key' in event ? event.key.toString() : undefined;
}

async function startNode(dataDir: string, config: Partial<NodeConfig> = {}): Promise<MercuryNode> {
  return MercuryNode.start(validateConfig({ dataDir, host: '127.0.0.1', port: 0, ...config }), { auth: 'off', limits: NODE_LIMITS_TEST });
}

/** The certificate a TLS server presents now (a new handshake). */
function servedCertificate(url: string): Promise<tls.PeerCertificate> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: hostname, port: Number(port), ca: clientTls().ca }, () => {
      resolve(socket.getPeerCertificate());
      socket.end();
    });
    socket.on('error', reject);
  });
}

describe('tls - HTTPS, wss and mutual TLS replication', () => {
  const dir = makeTempDir('tls');
  const nodes: MercuryNode[] = [];
  const clients: MercuryClient[] = [];
  after(async () => {
    for (const client of clients) client.close();
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });
  let root: MercuryNode;
  let replica: MercuryNode;

  test('tls: the API serves https and wss to a client that trusts the cluster CA', async () => {
    root = await startNode(join(dir, 'root'), { tls: tlsPaths() });
    nodes.push(root);
    assert.match(root.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const client = connect(root.url, { ca: clientTls().ca, attemptsMax: 1 });
    clients.push(client);
    const { seq } = await client.put('tls/a', 'secret');
    assert.equal((await client.get('tls/a'))?.value.toString(), 'secret');
    const watch = client.watch({ prefix: 'tls/', fromSeq: seq });
    const first = await watch.next();
    assert.equal(first.done, false);
    assert.equal(first.value.seq, seq);
    assert.equal(eventKey(first), 'tls/a');
    await watch.return();
    const status = await client.status();
    assert.equal((status as { tls?: { enabled: boolean; subject: string } }).tls?.subject, 'node');
  });

  test('tls: a replica follows over mutual TLS, and writes sent to it are forwarded over TLS', async () => {
    replica = await startNode(join(dir, 'replica'), { tls: tlsPaths(), upstreams: [root.replicationAddress] });
    nodes.push(replica);
    await streaming(replica);
    const client = connect(replica.url, { ca: clientTls().ca, attemptsMax: 1 });
    clients.push(client);
    const { seq } = await client.put('tls/forwarded', 'through the replica');
    assert.equal((await client.get('tls/forwarded'))?.value.toString(), 'through the replica');
    assert.ok(root.store.head().seq >= seq);
    assert.equal(replica.replicationClient?.status().phase, 'streaming');
    assert.match(replica.replicationClient?.status().upstreamHttpUrl ?? '', /^https:/);
  });

  test('tls: the subject CN of a verified client certificate reaches the request; an unverified one is answered 401', async () => {
    const material = readTlsMaterial(tlsPaths());
    const rejected: string[] = [];
    const server = createHttpServer(
      (req, res) => {
        res.end(JSON.stringify({ name: clientCertificateName(req) ?? null }));
      },
      undefined,
      undefined,
      { tls: material, onRejected: (reason) => rejected.push(reason) },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const ask = (options: { cert?: Buffer; key?: Buffer }): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port, path: '/', ca: clientTls().ca, agent: false, ...options }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    try {
      assert.deepEqual(await ask({}), { status: 200, body: '{"name":null}' });
      assert.deepEqual(await ask(clientTls(certs.client)), { status: 200, body: '{"name":"alice"}' });
      const other = await ask(clientTls(certs.otherClient));
      assert.equal(other.status, 401);
      assert.match(other.body, /UNAUTHENTICATED.*client certificate was rejected.*signed by the cluster CA/);
      const expired = await ask(clientTls(certs.expiredClient));
      assert.equal(expired.status, 401);
      assert.match(expired.body, /CERT_HAS_EXPIRED/);
      assert.deepEqual(rejected, ['untrusted_certificate', 'certificate_expired']);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('tls: new certificate files are served without a restart, and open watches and replication go on', async () => {
    // The node reads its files from a directory the test can rewrite, as a certificate manager would.
    const filesDir = makeTempDir('tls-reload');
    try {
      const paths = { certPath: join(filesDir, 'node.pem'), keyPath: join(filesDir, 'node-key.pem'), caPath: join(filesDir, 'ca.pem') };
      copyFileSync(certs.node.certPath, paths.certPath);
      copyFileSync(certs.node.keyPath, paths.keyPath);
      copyFileSync(certs.ca.certPath, paths.caPath);
      const node = await startNode(join(dir, 'reload'), { tls: paths });
      nodes.push(node);
      const follower = await startNode(join(dir, 'reload-replica'), { tls: tlsPaths(), upstreams: [node.replicationAddress] });
      nodes.push(follower);
      const client = connect(node.url, { ca: clientTls().ca, attemptsMax: 1 });
      clients.push(client);
      const watch = client.watch({ prefix: 'r/', fromSeq: (await client.put('r/1', 'before')).seq });
      assert.equal(eventKey(await watch.next()), 'r/1');
      await streaming(follower);
      const switches = follower.replicationClient?.status().upstreamSwitches;
      const before = await servedCertificate(node.url);

      const renewed = issueCertificate(certs.ca, filesDir, 'renewed', { commonName: 'node', hosts: LOOPBACK_HOSTS });
      // A broken pair first: the reload fails, the old certificate stays.
      copyFileSync(renewed.certPath, paths.certPath);
      assert.equal(node.reloadTls('test'), false);
      assert.equal((await servedCertificate(node.url)).serialNumber, before.serialNumber);
      copyFileSync(renewed.keyPath, paths.keyPath);
      assert.equal(node.reloadTls('test'), true);
      const after = await servedCertificate(node.url);
      assert.notEqual(after.serialNumber, before.serialNumber);

      // The watch and the replica's stream were opened before the reload and still deliver.
      const { seq } = await client.put('r/2', 'after');
      assert.equal(eventKey(await watch.next()), 'r/2');
      await waitUntil('the replica applied the write made after the reload', () => Promise.resolve(follower.store.head().seq >= seq));
      assert.equal(follower.replicationClient?.status().upstreamSwitches, switches);
      await watch.return();
    } finally {
      removeDir(filesDir);
    }
  });
});

describe('tls - a client certificate that does not verify is refused, on requests and watch upgrades', () => {
  const dir = makeTempDir('tls-untrusted');
  let node: MercuryNode;
  let admin: string;
  before(async () => {
    // Auth required (the default): a request without any certificate still authenticates with its token.
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), host: '127.0.0.1', port: 0, tls: tlsPaths() }), { limits: NODE_LIMITS_TEST });
    admin = readFileSync(join(dir, 'node', 'admin-token'), 'utf8').trim();
  });
  after(async () => {
    await node.close();
    removeDir(dir);
  });

  /** Sends `head` on a new TLS connection (with `credentials`' client certificate, if any); resolves with the answer's head and body. */
  function exchange(head: string, credentials: { cert?: Buffer; key?: Buffer }): Promise<string> {
    const { hostname, port } = new URL(node.url);
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ host: hostname, port: Number(port), ca: clientTls().ca, ...credentials }, () => socket.write(head));
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        // A 101 has no body: the head is the whole answer; an error has its content-length.
        const headEnd = text.indexOf('\r\n\r\n');
        const length = /\r\ncontent-length: *(\d+)/i.exec(text);
        if (headEnd > 0 && (text.startsWith('HTTP/1.1 101') || (length !== null && text.length >= headEnd + 4 + Number(length[1])))) {
          socket.destroy();
          resolve(text);
        }
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(text));
    });
  }

  const host = (): string => new URL(node.url).host;
  const statusRequest = (): string => `GET /v1/status HTTP/1.1\r\nHost: ${host()}\r\nAuthorization: Bearer ${admin}\r\n\r\n`;
  const watchUpgrade = (): string =>
    `GET /v1/watch HTTP/1.1\r\nHost: ${host()}\r\nAuthorization: Bearer ${admin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${Buffer.alloc(16, 7).toString('base64')}\r\n\r\n`;

  function rejectedCount(reason: string): number {
    const line = node.metrics
      .render()
      .split('\n')
      .find((candidate) => candidate.startsWith('mercury_tls_rejected_total{') && candidate.includes('port="http"') && candidate.includes(`reason="${reason}"`));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
  }

  test('tls: without a client certificate a token authenticates, on a request and a watch upgrade', async () => {
    assert.match(await exchange(statusRequest(), {}), /^HTTP\/1\.1 200 /);
    assert.match(await exchange(watchUpgrade(), {}), /^HTTP\/1\.1 101 /);
    assert.match(await exchange(watchUpgrade(), clientTls(certs.client)), /^HTTP\/1\.1 101 /, 'a verified certificate with a token: served');
  });

  for (const [what, credentials, reason, verifyError] of [
    ['a certificate from another CA', () => clientTls(certs.otherClient), 'untrusted_certificate', /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/],
    ['an expired certificate', () => clientTls(certs.expiredClient), 'certificate_expired', /CERT_HAS_EXPIRED/],
  ] as const) {
    test(`tls: ${what} is answered 401 naming the verify error, on a request and on a watch upgrade, even with a valid token; counted`, async () => {
      const before = rejectedCount(reason);
      for (const head of [statusRequest(), watchUpgrade()]) {
        const answer = await exchange(head, credentials());
        assert.match(answer, /^HTTP\/1\.1 401 /, answer);
        const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { error: { code: string; message: string } };
        assert.equal(body.error.code, 'UNAUTHENTICATED');
        assert.match(body.error.message, /^the client certificate was rejected \(/);
        assert.match(body.error.message, verifyError);
        assert.match(body.error.message, /present one signed by the cluster CA/);
      }
      // One connection each: counted once per connection, like the replication port's rejections.
      assert.equal(rejectedCount(reason), before + 2);
    });
  }
});
