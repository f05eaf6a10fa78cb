/**
 * Hostile input - TLS handshakes that never finish. Found on a real node (audit, 2026-12-07): on the TLS replication
 * port, `handshakingSocketsMax` counted a socket only until its first byte; a peer that sent the first bytes of a
 * ClientHello (or all of it) and stopped was handed to the TLS server, counted by nothing, and held until the
 * handshake timeout (10 s), with about 52 KB of OpenSSL state: 2,000 such peers held 2,000 descriptors and 104 MB of
 * RSS for 10 s, and enough of them would have taken the process's open files from HTTP and LMDB. Now a socket counts
 * until its handshake is done (or it closes), and beyond the cap a new one is closed at once. The HTTPS port had no
 * bound but its connection caps (19,236, 4,000 per host: some 1 GB of handshakes); it now holds at most
 * HTTP_TLS_HANDSHAKES_MAX, HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX per host (docs/decisions.md, record 80).
 * The node runs as a real process with its production limits, so that its descriptors can be counted alone.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import https from 'node:https';
import tls from 'node:tls';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { HTTP_TLS_HANDSHAKES_MAX, HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX } from '../src/limits.js';
import { REPLICATION_LIMITS } from '../src/replication/index.js';
import { clientTls, testCertificates } from './support/certs.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

/** Peers that start a handshake and stop: many times the cap, all connected well within one handshake timeout. */
const PEERS = 400;
/** How long the open peers must stay steady to be counted: far below the 10 s handshake timeout that closes them. */
const STEADY_MS = 500;

function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function hostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
}

/** The first flight of a real TLS client (a whole ClientHello), captured from a listener that answers nothing. */
async function clientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const server = net.createServer((socket) =>
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
        server.close();
      }),
    );
    server.listen(0, '127.0.0.1', () => {
      const client = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, rejectUnauthorized: false });
      client.on('error', () => {});
    });
  });
}

/**
 * PEERS connections, spread over 127.0.x.y, that each send `first` and then nothing. Resolves, with the peers still
 * open and the node's peak descriptors over its baseline, once the open count held still for STEADY_MS.
 */
async function stalledHandshakes(
  pid: number,
  address: string,
  first: Buffer,
  peers = PEERS,
  localAddressOf: (i: number) => string = (i) => `127.0.${1 + Math.floor(i / 200)}.${1 + (i % 200)}`,
): Promise<{ open: number; extraFiles: number; sockets: net.Socket[] }> {
  const { host, port } = hostPort(address);
  const baseline = openFiles(pid);
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, openFiles(pid))), 10);
  let open = 0;
  const sockets: net.Socket[] = [];
  for (let i = 0; i < peers; i++) {
    const localAddress = localAddressOf(i);
    await new Promise<void>((resolve) => {
      const socket = net.connect({ host, port, localAddress }, () => {
        open++;
        socket.once('close', () => open--);
        socket.write(first, () => resolve());
      });
      socket.on('error', () => resolve());
      socket.on('data', () => {});
      sockets.push(socket);
    });
  }
  let last = -1;
  let steadySinceMs = Date.now();
  while (Date.now() - steadySinceMs < STEADY_MS) {
    if (open !== last) [last, steadySinceMs] = [open, Date.now()];
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  clearInterval(sampler);
  return { open, extraFiles: peak - baseline, sockets };
}

describe('hostile input - TLS handshakes that never finish', () => {
  const dir = makeTempDir('hostile-memory-tls');
  const nodes: ServeProcess[] = [];
  const sockets: net.Socket[] = [];
  after(async () => {
    for (const socket of sockets) socket.destroy();
    for (const node of nodes) await stopProcess(node.child);
    removeDir(dir);
  });

  test('replication port: peers that send part or all of a ClientHello and stop count against handshakingSocketsMax until their handshake ends', async () => {
    const certificates = testCertificates();
    const node = await startServe(join(dir, 'node'), ['--tls-cert', certificates.node.certPath, '--tls-key', certificates.node.keyPath, '--tls-ca', certificates.ca.certPath]);
    nodes.push(node);
    const pid = node.child.pid!;
    const hello = await clientHello();
    const cap = REPLICATION_LIMITS.handshakingSocketsMax;
    for (const [what, first] of [
      ['the first 50 bytes of a ClientHello', hello.subarray(0, 50)],
      ['a whole ClientHello', hello],
    ] as const) {
      const attack = await stalledHandshakes(pid, node.replication, first);
      sockets.push(...attack.sockets);
      // Before: every peer (400 of 400) stayed open until the 10 s handshake timeout, 400 descriptors in the node.
      assert.ok(attack.open <= cap, `${what}: ${attack.open} of ${PEERS} peers held open in their handshake; at most ${cap}`);
      assert.ok(attack.extraFiles <= cap + REPLICATION_LIMITS.closingSocketsMax, `${what}: the node held ${attack.extraFiles} more descriptors; at most ${cap} handshakes and ${REPLICATION_LIMITS.closingSocketsMax} closing`);
      for (const socket of attack.sockets) socket.destroy();
    }
    // One host holds at most handshakingSocketsPerAddressMax: while its stalled peers are still open, a replica on
    // another host gets through its handshake (before, one host could take all 32 and keep every replica out).
    const perHost = REPLICATION_LIMITS.handshakingSocketsPerAddressMax;
    const oneHost = await stalledHandshakes(pid, node.replication, hello.subarray(0, 50), 100, () => '127.0.0.9');
    sockets.push(...oneHost.sockets);
    assert.ok(oneHost.open <= perHost, `one host: ${oneHost.open} of 100 peers held open in their handshake; at most ${perHost}`);
    const { host, port } = hostPort(node.replication);
    await new Promise<void>((resolve, reject) => {
      const replica = tls.connect({ host, port, ...clientTls(certificates.node) }, () => {
        replica.destroy();
        resolve();
      });
      replica.once('error', reject);
    });
    for (const socket of oneHost.sockets) socket.destroy();
  });

  test('HTTPS port: peers that send part of a ClientHello and stop hold at most tlsHandshakesPerAddressMax per host and tlsHandshakesMax in all', async () => {
    const certificates = testCertificates();
    const node = await startServe(join(dir, 'https'), ['--tls-cert', certificates.node.certPath, '--tls-key', certificates.node.keyPath, '--tls-ca', certificates.ca.certPath]);
    nodes.push(node);
    const pid = node.child.pid!;
    const first = (await clientHello()).subarray(0, 50);
    const address = new URL(node.url).host;
    // A handshake that ends gives its slot back: more clients of one host (127.0.0.1) than its cap, each kept open.
    const { host, port } = hostPort(address);
    const clients: tls.TLSSocket[] = [];
    for (let i = 0; i < HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX + 44; i++)
      await new Promise<void>((resolve, reject) => {
        const client = tls.connect({ host, port, ...clientTls() }, () => resolve());
        client.once('error', reject);
        clients.push(client);
      });
    for (const client of clients) client.destroy();
    // One host: before, every one of them held its handshake (and about 52 KB) until the 5 s handshake timeout.
    const oneHost = await stalledHandshakes(pid, address, first, PEERS, () => '127.0.0.1');
    sockets.push(...oneHost.sockets);
    assert.ok(oneHost.open <= HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX, `one host: ${oneHost.open} of ${PEERS} peers held open in their handshake; at most ${HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX}`);
    for (const socket of oneHost.sockets) socket.destroy();
    // Many hosts (distinct 127.0.x.y), more peers than the port's cap: before, all of them held theirs.
    const many = HTTP_TLS_HANDSHAKES_MAX + 200;
    const manyHosts = await stalledHandshakes(pid, address, first, many);
    sockets.push(...manyHosts.sockets);
    assert.ok(manyHosts.open <= HTTP_TLS_HANDSHAKES_MAX, `many hosts: ${manyHosts.open} of ${many} peers held open in their handshake; at most ${HTTP_TLS_HANDSHAKES_MAX}`);
    for (const socket of manyHosts.sockets) socket.destroy();
    // They gone, a client's handshake and request go through.
    const status = await new Promise<number>((resolve, reject) => {
      const request = https.get(`${node.url}/healthz`, { ...clientTls() }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.once('error', reject);
    });
    assert.equal(status, 200);
  });
});
