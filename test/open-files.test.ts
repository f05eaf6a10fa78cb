/**
 * Open files: a node's caps, full at once, must fit the open files its process may hold (record 88). Found on a real
 * `mercury serve` whose limit was 150 (audit, 2026-12-08): its HTTP cap stayed 19,236, so 200 connections took every
 * descriptor; a write forwarded to the root then failed with EMFILE, new connections (a liveness probe) were reset by
 * libuv, and a certificate reload could not read its files. Now a node under a lower limit lowers its HTTP connections
 * to fit, keeps the files the rest of its caps need free, and refuses to start under a limit too low to serve.
 *
 * A node out of descriptors all the same (something uncounted took them: test/support/fd-filler.ts) failed to reload
 * a rotated certificate, as it should, but never tried again: the files' stamp was taken as read, so the new
 * certificate went unused until the files changed once more. Now the next poll reads them again.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readdirSync, renameSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { NODE_IDLE_FILES_MAX } from '../src/limits.js';
import { NODE_LIMITS } from '../src/node/index.js';
import { openFilesNeeded } from '../src/node/limits.js';
import { issueCertificate } from '../src/net/tls-certs.js';
import { LOOPBACK_HOSTS, testCertificates } from './support/certs.js';
import { fdFillerEnv } from './support/fd-filler.js';
import { metricValue, waitUntil } from './support/http.js';
import { makeTempDir, openFilesLimited, removeDir, serveRefused, startServe, stopProcess, type ServeProcess } from './support/process.js';

/** A limit a few hundred connections reach: 348 HTTP connections once the rest of the caps have their files. */
const OPEN_FILES = 1_100;
/** More than the limit: without the fit, they take every descriptor the node has. */
const CONNECTIONS = 1_000;
/** Files the caps other than HTTP connections need, apart from what an idle node holds: they must stay free. */
const RESERVED_BUSY = openFilesNeeded(NODE_LIMITS) - NODE_LIMITS.http.connectionsMax - NODE_IDLE_FILES_MAX;

interface Peer {
  answered: boolean;
  closed: boolean;
}

/** A keep-alive HTTP connection that asks for /healthz now and every 2 s (the node closes one idle for 5 s). */
function keepAlivePeer(url: string, localAddress: string, sockets: net.Socket[]): Peer {
  const { hostname, port } = new URL(url);
  const peer: Peer = { answered: false, closed: false };
  const socket = net.connect({ host: hostname, port: Number(port), localAddress });
  const ask = (): void => void socket.write(`GET /healthz HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`);
  let timer: NodeJS.Timeout | undefined;
  socket.on('connect', () => {
    ask();
    timer = setInterval(ask, 2_000);
  });
  socket.on('data', () => (peer.answered = true));
  socket.on('error', () => {});
  socket.on('close', () => {
    peer.closed = true;
    clearInterval(timer);
  });
  sockets.push(socket);
  return peer;
}

function filesOf(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function put(agent: http.Agent, url: string, key: string, value: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${url}/v1/kv/${key}`, { method: 'PUT', agent }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (text: string) => (body += text));
      response.on('end', () => resolve({ status: response.statusCode!, body }));
    });
    request.on('error', reject);
    request.end(value);
  });
}

describe('open files', () => {
  const dir = makeTempDir('open-files');
  const sockets: net.Socket[] = [];
  let node: ServeProcess | undefined;
  after(async () => {
    for (const socket of sockets) socket.destroy();
    if (node !== undefined) await stopProcess(node.child);
    removeDir(dir);
  });

  test('open files: under a limit below the caps, HTTP connections are lowered to fit and the rest of the files stay free while full', async () => {
    node = await startServe(join(dir, 'lowered'), [], undefined, undefined, openFilesLimited(OPEN_FILES));
    const pid = node.child.pid!;
    // A client connected before the flood: its writes must still commit while the node is full.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await put(agent, node.url, 'before', 'one')).status, 200);
    const peers = Array.from({ length: CONNECTIONS }, (_, index) => keepAlivePeer(node!.url, `127.0.0.${2 + (index % 4)}`, sockets));
    // Each peer is either served or refused (closed at once over the cap); none waits in the kernel's backlog.
    await waitUntil('every connection is served or refused', () => Promise.resolve(peers.every((peer) => peer.answered || peer.closed)), 60_000);
    const served = peers.filter((peer) => peer.answered && !peer.closed).length;
    const files = filesOf(pid);
    assert.ok(
      files <= OPEN_FILES - RESERVED_BUSY,
      `the node holds ${files} files with ${served} connections served, of at most ${OPEN_FILES}: the ${RESERVED_BUSY} its wire, replication and forwarded-write caps need are no longer free; stderr: ${node.stderr()}`,
    );
    assert.ok(served > 0 && served < CONNECTIONS, `${served} of ${CONNECTIONS} connections served`);
    const full = await put(agent, node.url, 'while-full', 'two');
    assert.equal(full.status, 200, `a write on a connection opened before the flood, while full: ${full.body}`);
    for (const socket of sockets) socket.destroy();
    agent.destroy();
    await waitUntil('the flood is gone', () => Promise.resolve(filesOf(pid) < 100), 30_000);
    const connectionsMax = await metricValue(node.url, /^mercury_http_connections_max /);
    assert.equal(connectionsMax, OPEN_FILES - (openFilesNeeded(NODE_LIMITS) - NODE_LIMITS.http.connectionsMax));
    assert.equal(await metricValue(node.url, /^mercury_open_files_max /), OPEN_FILES);
    const held = await metricValue(node.url, /^mercury_open_files /);
    assert.ok(held > 0 && held < 100, `mercury_open_files ${held} once the flood is gone`);
    assert.match(node.stderr(), /"message":"open-files limit below what the caps need: HTTP connections lowered to fit","openFilesMax":1100,"httpConnectionsMax":348/);
  });

  test('open files: a limit too low for the caps and a few hundred HTTP connections refuses the start, saying how to raise it', async () => {
    const refused = await serveRefused(join(dir, 'refused'), [], openFilesLimited(500));
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /CONFIG_INVALID: the open-files limit of this process is 500 \(ulimit -n\), and a node needs at least 1008: .* raise it to 19988 /);
  });

  test('open files: a certificate rotated while the node has no descriptor left is reloaded once it has', async () => {
    const certificates = testCertificates();
    const tlsDir = makeTempDir('open-files-tls');
    try {
      const certPath = join(tlsDir, 'node.pem');
      const keyPath = join(tlsDir, 'node-key.pem');
      copyFileSync(certificates.node.certPath, certPath);
      copyFileSync(certificates.node.keyPath, keyPath);
      const rotated = issueCertificate(certificates.ca, tlsDir, 'rotated', { commonName: 'rotated', hosts: LOOPBACK_HOSTS });
      const tlsNode = await startServe(join(dir, 'tls'), ['--tls-cert', certPath, '--tls-key', keyPath, '--tls-ca', certificates.ca.certPath], fdFillerEnv(), undefined, openFilesLimited(OPEN_FILES));
      try {
        tlsNode.child.kill('SIGUSR2');
        await waitUntil('the node has no descriptor left', () => Promise.resolve(/fd-filler: filled \d+/.test(tlsNode.stderr())));
        // Key first, then the certificate, each renamed into place whole: the poll sees one change or the other.
        copyFileSync(rotated.keyPath, `${keyPath}.new`);
        copyFileSync(rotated.certPath, `${certPath}.new`);
        renameSync(`${keyPath}.new`, keyPath);
        renameSync(`${certPath}.new`, certPath);
        await waitUntil('the reload has failed for want of a descriptor', () => Promise.resolve(/TLS reload failed/.test(tlsNode.stderr())));
        tlsNode.child.kill('SIGUSR2');
        await waitUntil('the descriptors are back', () => Promise.resolve(/fd-filler: released \d+/.test(tlsNode.stderr())));
        await waitUntil('the rotated certificate is reloaded', () => Promise.resolve(/"message":"TLS certificate reloaded".*"subject":"rotated"/.test(tlsNode.stderr())), 15_000);
        assert.equal(tlsNode.child.exitCode, null, 'the node still runs');
      } finally {
        await stopProcess(tlsNode.child);
      }
    } finally {
      removeDir(tlsDir);
    }
  });
});
