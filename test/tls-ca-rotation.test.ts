/**
 * Rotating the CA revokes what is already connected: a reload that brings a new CA file closes every open connection
 * whose peer certificate the new file does not sign (an HTTP keep-alive connection, a watch, a wire connection, a
 * child replica's stream, and a replica's own link to its upstream), and leaves the others open. Before (stop 36), a
 * request on a keep-alive connection opened with a certificate of the replaced CA was still served after the reload.
 * A peer certificate that expires while its connection is open closes that connection at the next file poll (stop 38;
 * before, it stayed open until a CA change). Real certificates (openssl, test/support/certs.ts), in-process nodes on
 * loopback.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { NodeClient, connect } from '../src/client/index.js';
import { validateConfig, type NodeConfig } from '../src/config/index.js';
import { issueCertificate, type CertificateFiles } from '../src/net/tls-certs.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { clientTls, testCertificates, tlsPaths } from './support/certs.js';
import { waitUntil } from './support/http.js';
import { ManualClock } from './support/manual-clock.js';
import { makeTempDir, removeDir } from './support/process.js';
import { RawWire } from './support/wire.js';

const certs = testCertificates();

/** A TLS connection to a node's HTTP port that keeps its socket: requests one after another, or a watch upgrade. */
class HttpsConnection {
  private received = Buffer.alloc(0);

  private constructor(readonly socket: tls.TLSSocket) {
    socket.on('data', (chunk: Buffer) => (this.received = Buffer.concat([this.received, chunk])));
    socket.on('error', () => {});
  }

  static async open(url: string, options: tls.ConnectionOptions): Promise<HttpsConnection> {
    const { hostname, port } = new URL(url);
    const socket = tls.connect({ ...options, host: hostname, port: Number(port) });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', () => resolve());
      socket.once('error', reject);
    });
    return new HttpsConnection(socket);
  }

  /** Sends `GET path` on this connection (kept alive) and returns the answer's status line. */
  async get(path: string): Promise<string> {
    this.socket.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`);
    return this.statusLine();
  }

  /** Asks for a watch on this connection; the status line of the answer (101 when it is now a WebSocket). */
  async upgrade(): Promise<string> {
    this.socket.write('GET /v1/watch HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n');
    return this.statusLine();
  }

  /** Waits for a whole answer (headers and a content-length body) and takes it from what was received. */
  private async statusLine(): Promise<string> {
    await waitUntil('an answer on the connection', () => {
      const end = this.received.indexOf('\r\n\r\n');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(this.received.subarray(0, Math.max(end, 0)).toString('latin1'))?.[1] ?? 0);
      if (end >= 0 && this.received.length >= end + 4 + length) return Promise.resolve(true);
      assert.ok(!this.socket.destroyed, 'the connection closed before its answer');
      return Promise.resolve(false);
    });
    const text = this.received.toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
    this.received = this.received.subarray(end + 4 + length);
    return text.slice(0, text.indexOf('\r\n'));
  }
}

function closed(what: string, socket: { destroyed: boolean }): Promise<void> {
  return waitUntil(`the node closed ${what}`, () => Promise.resolve(socket.destroyed));
}

describe('tls - a new CA file closes the open connections it no longer signs', () => {
  const dir = makeTempDir('tls-ca-rotation');
  const nodes: MercuryNode[] = [];
  after(async () => {
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });

  async function startNode(name: string, config: Partial<NodeConfig>, auth: 'off' | 'required'): Promise<MercuryNode> {
    // Idle keep-alive connections stay open for a minute (the test limits close them after 1 s): what closes one here
    // is the CA change, not its idleness.
    const limits = { ...NODE_LIMITS_TEST, http: { ...NODE_LIMITS_TEST.http, keepAliveTimeoutMs: 60_000 } };
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, name), host: '127.0.0.1', port: 0, ...config }), { auth, limits });
    nodes.push(node);
    return node;
  }

  /** A node's `--tls-*` files in a directory of their own, which the test rewrites as a certificate manager would. */
  function tlsFiles(name: string): { paths: ReturnType<typeof tlsPaths>; install: (node: CertificateFiles, ...cas: CertificateFiles[]) => void } {
    const paths = { certPath: join(dir, `${name}-cert.pem`), keyPath: join(dir, `${name}-key.pem`), caPath: join(dir, `${name}-ca.pem`) };
    const install = (node: CertificateFiles, ...cas: CertificateFiles[]): void => {
      copyFileSync(node.certPath, paths.certPath);
      copyFileSync(node.keyPath, paths.keyPath);
      writeFileSync(paths.caPath, Buffer.concat(cas.map((ca) => readFileSync(ca.certPath))));
    };
    install(certs.node, certs.ca);
    return { paths, install };
  }

  const streaming = (replica: MercuryNode): Promise<void> =>
    waitUntil('the replica streams from its upstream', () => Promise.resolve(replica.replicationClient?.status().phase === 'streaming'));

  test('tls: a staged CA rotation closes nothing while both CAs are in the file, then exactly the connections of the old CA', async () => {
    const files = tlsFiles('root');
    const root = await startNode('root', { tls: files.paths }, 'required');
    const adminToken = readFileSync(join(dir, 'root', 'admin-token'), 'utf8').trim();
    const admin = new NodeClient(root.url, 5_000, clientTls(), `Bearer ${adminToken}`);
    await admin.createToken('replica', ['replicate'], { subject: 'node' });
    await admin.createToken('alice', ['read:app/'], { subject: 'alice' });
    await admin.createToken('mallory', ['read:app/'], { subject: 'mallory' });
    await connect(root.url, { ...clientTls(), token: adminToken, attemptsMax: 1 }).put('app/x', '1');
    const replica = await startNode('replica', { tls: tlsPaths(), upstreams: [root.replicationAddress] }, 'off');
    await streaming(replica);
    const switches = replica.replicationClient!.status().upstreamSwitches;

    // alice's certificate (the old CA) on every port: a keep-alive connection, a watch, a wire connection.
    const alice = clientTls(certs.client);
    const http = await HttpsConnection.open(root.url, alice);
    assert.match(await http.get('/v1/kv/app/x'), / 200 /);
    const watch = await HttpsConnection.open(root.url, alice);
    assert.match(await watch.upgrade(), / 101 /);
    const wire = await RawWire.ready(root.wireUrl, undefined, alice);

    // Both CAs in the file: everything stays, and mallory's certificate (the new CA) is now accepted.
    files.install(certs.node, certs.ca, certs.otherCa);
    assert.equal(root.reloadTls('test'), true);
    const mallory = await HttpsConnection.open(root.url, clientTls(certs.otherClient));
    assert.match(await mallory.get('/v1/kv/app/x'), / 200 /);
    assert.match(await http.get('/v1/kv/app/x'), / 200 /, 'the keep-alive connection of the old CA is still served while the file holds it');
    assert.equal(watch.socket.destroyed || wire.socket.destroyed, false);
    assert.equal(replica.replicationClient!.status().upstreamSwitches, switches);
    assert.equal(replica.replicationClient!.status().phase, 'streaming');

    // The new CA alone, and the node's certificate from it: what the old CA signed is closed, the rest stays.
    files.install(certs.otherNode, certs.otherCa);
    assert.equal(root.reloadTls('test'), true);
    await closed('the keep-alive connection', http.socket);
    await closed('the watch', watch.socket);
    await closed('the wire connection', wire.socket);
    await waitUntil('the child replica is disconnected', () => Promise.resolve(root.replicationServer.children().length === 0));
    assert.match(await mallory.get('/v1/kv/app/x'), / 200 /, 'a connection whose certificate the new CA signed stays open');
    // alice, back with the old certificate, is refused in her new connection, as before the change.
    const again = await HttpsConnection.open(root.url, clientTls(certs.client, certs.otherCa));
    assert.match(await again.get('/v1/kv/app/x'), / 401 /);
    again.socket.destroy();
    mallory.socket.destroy();
    const status = (await new NodeClient(root.url, 5_000, clientTls(undefined, certs.otherCa), `Bearer ${adminToken}`).status()) as { tls?: { closedOnCaChange?: number } };
    assert.equal(status.tls?.closedOnCaChange, 4, 'the keep-alive connection, the watch, the wire connection and the replica');
  });

  test('tls: a replica whose new CA file does not sign its upstream closes that connection', async () => {
    const upstream = await startNode('upstream', { tls: tlsPaths() }, 'off');
    const files = tlsFiles('follower');
    const follower = await startNode('follower', { tls: files.paths, upstreams: [upstream.replicationAddress] }, 'off');
    await streaming(follower);
    assert.equal(upstream.replicationServer.children().length, 1);
    files.install(certs.otherNode, certs.otherCa);
    assert.equal(follower.reloadTls('test'), true);
    await waitUntil('the upstream lost its child', () => Promise.resolve(upstream.replicationServer.children().length === 0));
    assert.notEqual(follower.replicationClient!.status().phase, 'streaming');
  });
});

describe('tls - a peer certificate that expires while its connection is open', () => {
  const dir = makeTempDir('tls-peer-expiry');
  let node: MercuryNode | undefined;
  after(async () => {
    await node?.close();
    removeDir(dir);
  });

  test('tls: the file poll after the expiry closes that connection and keeps the others', async () => {
    const shortLived = issueCertificate(certs.ca, dir, 'short-client', { commonName: 'alice', days: 2 });
    const clock = new ManualClock(Date.now());
    // Idle connections outlast the clock's steps here: what closes one is its certificate's expiry.
    const limits = { ...NODE_LIMITS_TEST, http: { ...NODE_LIMITS_TEST.http, keepAliveTimeoutMs: 60_000 }, wire: { ...NODE_LIMITS_TEST.wire, idleTimeoutMs: 60_000 } };
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), host: '127.0.0.1', port: 0, tls: tlsPaths() }), { auth: 'off', limits, clock });
    const expiring = await HttpsConnection.open(node.url, clientTls(shortLived));
    const lasting = await HttpsConnection.open(node.url, clientTls(certs.client));
    const wire = await RawWire.ready(node.wireUrl, undefined, clientTls(shortLived));
    assert.match(await expiring.get('/v1/status'), / 200 /);
    assert.match(await lasting.get('/v1/status'), / 200 /);

    clock.advance(4_000); // polls with every certificate valid: nothing closed
    assert.match(await expiring.get('/v1/status'), / 200 /);
    assert.match(await lasting.get('/v1/status'), / 200 /);
    assert.equal(wire.socket.destroyed, false);

    clock.stepWall(3 * 86_400_000);
    clock.advance(2_000);
    await closed('the keep-alive connection of the expired certificate', expiring.socket);
    await closed('the wire connection of the expired certificate', wire.socket);
    assert.match(await lasting.get('/v1/status'), / 200 /, 'a connection whose certificate is still valid stays open');
    lasting.socket.destroy();
    const status = (await new NodeClient(node.url, 5_000, clientTls()).status()) as { tls?: { closedOnPeerExpiry?: number } };
    assert.equal(status.tls?.closedOnPeerExpiry, 2);
  });
});
