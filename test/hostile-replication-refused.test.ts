/**
 * Hostile input - refused peers on the replication port. Found on a real node: a peer refused on the replication port
 * (a bad first message, one over the per-address cap, a plaintext peer on the TLS port) was "closed after 1 s" by an
 * idle timeout, which every byte it trickled in reset: it was never closed, and such sockets sit outside the child
 * slots, so one unauthenticated host held descriptors without bound until the node's HTTP port stopped answering.
 * Now a closing socket is destroyed on a hard deadline whatever it sends, and at most `closingSocketsMax` close at once.
 * The node runs as a real process with its production limits, so that its descriptors can be counted alone.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { REPLICATION_LIMITS, encodeMessage } from '../src/replication/index.js';
import { testCertificates } from './support/certs.js';
import { assertHealthzAnswers } from './support/hostile.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

/** Peers per attack: several times the per-address child cap plus the closing cap, all connected within a second. */
const PEERS = 300;
/** A byte this often: well within the old 1 s idle timeout, so that only a hard deadline closes the peer. */
const TRICKLE_INTERVAL_MS = 200;
/**
 * Each refused peer must be closed by the node within this long of connecting: the 1 s flush deadline, plus time for
 * a loaded machine to accept and refuse PEERS connections.
 */
const CLOSED_WITHIN_MS = 4_000;
/**
 * Descriptors the attack may add to the node at any moment: the sessions one address may hold, the sockets closing,
 * and sockets between accept and their refusal. Without the bound every peer would hold one (PEERS).
 */
const ATTACK_FILES_MAX = REPLICATION_LIMITS.childrenPerAddressMax + REPLICATION_LIMITS.closingSocketsMax + 96;

function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

interface Peer {
  readonly socket: net.Socket;
  closedByNode: boolean;
  received: Buffer;
}

/**
 * PEERS connections that each send `first` and then a byte every TRICKLE_INTERVAL_MS, never closing themselves.
 * Resolves once every one was closed by the node or CLOSED_WITHIN_MS passed, with the node's descriptor count sampled
 * all along.
 */
async function trickleAttack(node: ServeProcess, first: Buffer): Promise<{ peers: Peer[]; baselineFiles: number; peakFiles: number }> {
  const pid = node.child.pid!;
  const baselineFiles = openFiles(pid);
  let peakFiles = baselineFiles;
  const sampler = setInterval(() => (peakFiles = Math.max(peakFiles, openFiles(pid))), 10);
  const [host, port] = [node.replication.slice(0, node.replication.lastIndexOf(':')), Number(node.replication.slice(node.replication.lastIndexOf(':') + 1))];
  const peers: Peer[] = [];
  for (let i = 0; i < PEERS; i++) {
    // allowHalfOpen: the peer keeps writing after the node's FIN, as the attack did.
    const socket = net.connect({ host, port, allowHalfOpen: true });
    const peer: Peer = { socket, closedByNode: false, received: Buffer.alloc(0) };
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => (peer.received = Buffer.concat([peer.received, chunk])));
    socket.on('close', () => (peer.closedByNode = true));
    socket.on('connect', () => socket.write(first));
    peers.push(peer);
  }
  const trickle = setInterval(() => {
    for (const peer of peers) if (!peer.socket.destroyed) peer.socket.write(Buffer.from([0]));
  }, TRICKLE_INTERVAL_MS);
  const startedMs = Date.now();
  while (Date.now() - startedMs < CLOSED_WITHIN_MS && !peers.every((peer) => peer.closedByNode)) await new Promise((resolve) => setTimeout(resolve, 50));
  clearInterval(trickle);
  clearInterval(sampler);
  return { peers, baselineFiles, peakFiles };
}

/**
 * What one peer alone is told: it sends `first` and nothing more, and reads until the node closes. During the attack
 * a refused peer's REFUSE may be lost: the peer keeps sending, so the node's close resets the connection (unread bytes
 * on its side), and a reset can drop what the peer had not read yet; whether it had depends on how busy the machine is.
 */
async function loneRefusal(node: ServeProcess, first: Buffer): Promise<string> {
  const [host, port] = [node.replication.slice(0, node.replication.lastIndexOf(':')), Number(node.replication.slice(node.replication.lastIndexOf(':') + 1))];
  const socket = net.connect({ host, port }, () => socket.write(first));
  let received = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  socket.on('error', () => {});
  const timer = setTimeout(() => socket.destroy(), CLOSED_WITHIN_MS);
  await new Promise((resolve) => socket.once('close', resolve));
  clearTimeout(timer);
  return received.toString('latin1');
}

function assertAllClosed(peers: Peer[], what: string): void {
  const open = peers.filter((peer) => !peer.closedByNode).length;
  assert.equal(open, 0, `${what}: ${open} of ${PEERS} refused peers still open ${CLOSED_WITHIN_MS} ms after they connected`);
}

describe('hostile input - refused replication peers', () => {
  const dir = makeTempDir('hostile-replication-refused');
  const nodes: ServeProcess[] = [];
  after(async () => {
    for (const node of nodes) await stopProcess(node.child);
    removeDir(dir);
  });

  test('replication port: refused peers that keep sending are closed on a deadline, and at most closingSocketsMax close at once', async () => {
    const node = await startServe(join(dir, 'plain'));
    nodes.push(node);
    // A well-framed message that is not HELLO: PROTOCOL_ERROR for the sessions within the per-address cap, UNAVAILABLE
    // (over the cap) for the rest.
    const { peers, baselineFiles, peakFiles } = await trickleAttack(node, encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: 0 }));
    assertAllClosed(peers, 'plaintext port');
    assert.ok(
      peakFiles - baselineFiles <= ATTACK_FILES_MAX,
      `the node held ${peakFiles - baselineFiles} more descriptors during the attack; at most ${ATTACK_FILES_MAX} (sessions per address, closing sockets, accepts)`,
    );
    // A refused peer is told why (during the attack only those whose REFUSE outran the reset: see loneRefusal).
    assert.match(await loneRefusal(node, encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: 0 })), /expected HELLO, got ack/, 'a REFUSE that says why');
    await assertHealthzAnswers(node.url, 'after refused peers trickled bytes', node.child.pid);
  });

  test('replication port with mutual TLS: plaintext peers that keep sending are refused and closed on a deadline', async () => {
    const certificates = testCertificates();
    const node = await startServe(join(dir, 'tls'), [
      '--auth',
      'required',
      '--tls-cert',
      certificates.node.certPath,
      '--tls-key',
      certificates.node.keyPath,
      '--tls-ca',
      certificates.ca.certPath,
    ]);
    nodes.push(node);
    const { peers, baselineFiles, peakFiles } = await trickleAttack(node, Buffer.from('x'));
    assertAllClosed(peers, 'TLS port');
    // Before its first byte (TLS or not?) and its handshake a socket is no session: handshakingSocketsMax bounds those.
    // Without it, under the full suite's load, 300 peers connecting together held 233 descriptors in that stage.
    const bound = ATTACK_FILES_MAX + REPLICATION_LIMITS.handshakingSocketsMax;
    assert.ok(peakFiles - baselineFiles <= bound, `the node held ${peakFiles - baselineFiles} more descriptors; at most ${bound}`);
    assert.match(await loneRefusal(node, Buffer.from('x')), /mutual TLS/, 'a plaintext peer is told to use TLS');
  });
});
