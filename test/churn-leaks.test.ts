/**
 * Resource churn on a real `mercury serve` process: clients that connect, start something that holds a resource of
 * the node, and leave in an unusual way, thousands of times over. After each kind, whatever the node counts for
 * them must return to where it was: a gauge or a per-host slot that does not is a leak, even when it costs little
 * memory, because the caps it counts against are shared with every other client.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { encodeGet } from '../src/api/index.js';
import { metricValue, request, requestJson, waitUntil } from './support/http.js';
import { serveForSuite, type ServeProcess } from './support/process.js';
import { RawWire } from './support/wire.js';

/** Far beyond the node's head: every read asking for it parks until its timeout (60 s, the most a client may ask). */
const UNREACHED_SEQ = 1_000_000_000;
const PARKED_WAIT_MS = 60_000;
const PARKED_READS = 300;
const PARKED_READS_PER_WIRE = 30;
const REVOKED_READS = 20;

function seqWaiters(serve: ServeProcess): Promise<number> {
  return metricValue(serve.url, /^mercury_seq_waiters /);
}

/** The same gauge from a node with auth required (`/metrics` takes an admin token). */
async function seqWaitersAs(serve: ServeProcess, admin: string): Promise<number> {
  const text = (await request(serve.url, 'GET', '/metrics', { headers: { authorization: `Bearer ${admin}` } })).body.toString();
  const line = text.split('\n').find((candidate) => candidate.startsWith('mercury_seq_waiters '));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Opens a plain connection to the HTTP port, errors ignored (the test destroys it; the node may close it first). */
function openHttp(url: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port) }, () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('churn: what a client that leaves makes the node hold', () => {
  const served = serveForSuite('churn-leaks');

  test('churn: reads parked on minSeq (HTTP and wire) whose clients hang up stop being parked', async () => {
    // Before: a parked read held its place among the node's SEQ_WAITERS_MAX until its own timeout, whatever became of
    // its connection (600 of 600 dropped reads still parked 2.5 s after the last hang-up), so a host that parked reads
    // and hung up in a loop put every client's minSeq reads at OVERLOADED while holding no connection at all.
    const serve = served();
    const host = new URL(serve.url).host;
    const sockets: net.Socket[] = [];
    for (let i = 0; i < PARKED_READS; i++) {
      const socket = await openHttp(serve.url);
      socket.on('error', () => {});
      socket.write(`GET /v1/kv/churn?minSeq=${UNREACHED_SEQ}&timeoutMs=${PARKED_WAIT_MS} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      sockets.push(socket);
    }
    // The wire port takes at most 32 connections from one address, each up to 1,024 requests in flight.
    const wires: RawWire[] = [];
    for (let i = 0; i < PARKED_READS / PARKED_READS_PER_WIRE; i++) {
      const wire = await RawWire.ready(serve.wire);
      for (let id = 1; id <= PARKED_READS_PER_WIRE; id++) wire.send(encodeGet(id, Buffer.from('churn'), { seq: UNREACHED_SEQ, timeoutMs: PARKED_WAIT_MS }));
      wires.push(wire);
    }
    // Every read is parked before its client leaves: otherwise the test would measure nothing.
    await waitUntil(`${2 * PARKED_READS} reads are parked`, async () => (await seqWaiters(serve)) === 2 * PARKED_READS);
    for (const socket of sockets) socket.destroy();
    for (const wire of wires) wire.socket.destroy();
    // Well within the reads' own 60 s: nothing but the hang-ups can have ended them.
    await waitUntil('no read is parked once its client left', async () => (await seqWaiters(serve)) === 0, 15_000);
    // The node is fine: a read that can be served is served.
    const wire = await RawWire.ready(serve.wire);
    wire.send(encodeGet(2, Buffer.from('churn'), { seq: 0, timeoutMs: 1_000 }));
    assert.ok((await wire.next()) !== undefined);
    wire.socket.destroy();
    // A wire connection's reads share one abort signal, one listener each: past 10, Node warned of a "memory leak" on
    // stderr, once per connection, which any client parking 11 reads could make the node print.
    assert.doesNotMatch(serve.stderr(), /MaxListenersExceeded/);
  });
  test('churn: pipelined reads parked on minSeq end when their connection is cut', async () => {
    // Before: only the first request of a connection ended; node:http closes no `res` of the requests queued behind it
    // (it destroys their `req`), so 7 of every 8 pipelined reads stayed parked for their 60 s after the hang-up.
    const serve = served();
    const host = new URL(serve.url).host;
    const sockets: net.Socket[] = [];
    // 8 connections of 8: their 56 pipelined reads stay within the node's 64 that may run ahead of their turn over
    // all connections (http.pipelinedAheadMax, the memory audit of 2026-12-07); with 10 connections 6 waited unparked.
    for (let i = 0; i < 8; i++) {
      const socket = await openHttp(serve.url);
      socket.on('error', () => {});
      let text = '';
      for (let j = 0; j < 8; j++) text += `GET /v1/kv/churn?minSeq=${UNREACHED_SEQ}&timeoutMs=${PARKED_WAIT_MS} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
      socket.write(text);
      sockets.push(socket);
    }
    await waitUntil('64 reads are parked', async () => (await seqWaiters(serve)) === 64);
    for (const socket of sockets) socket.destroy();
    await waitUntil('no pipelined read is parked once its client left', async () => (await seqWaiters(serve)) === 0, 15_000);
  });
});

describe('churn: a token revoked while its reads are parked', () => {
  const served = serveForSuite('churn-revoke', ['--auth', 'required']);

  test('churn: HTTP reads parked on minSeq with a token that is then revoked are answered 401 at once', async () => {
    // Before: they stayed parked until their own timeout (up to 60 s), each holding its connection and a place among
    // the node's parked reads, and were refused only then; the wire port closed such connections at the revocation.
    const serve = served();
    const admin = readFileSync(join(serve.dataDir, 'admin-token'), 'utf8').trim();
    const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
    const created = await requestJson<{ id: string; token: string }>(serve.url, 'POST', '/v1/auth/tokens', { headers, body: JSON.stringify({ name: 'churn-reader', scopes: ['read:churn/'] }) });
    const host = new URL(serve.url).host;
    const answers: Promise<string>[] = [];
    const sockets: net.Socket[] = [];
    for (let i = 0; i < REVOKED_READS; i++) {
      const socket = await openHttp(serve.url);
      let text = '';
      socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      answers.push(new Promise((resolve) => socket.once('close', () => resolve(text))));
      socket.on('error', () => {});
      socket.write(`GET /v1/kv/churn/${i}?minSeq=${UNREACHED_SEQ}&timeoutMs=${PARKED_WAIT_MS} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${created.token}\r\nConnection: close\r\n\r\n`);
      sockets.push(socket);
    }
    await waitUntil(`${REVOKED_READS} reads are parked`, async () => (await seqWaitersAs(serve, admin)) === REVOKED_READS);
    await requestJson(serve.url, 'DELETE', `/v1/auth/tokens?id=${created.id}`, { headers });
    await waitUntil('no read is parked once its token was revoked', async () => (await seqWaitersAs(serve, admin)) === 0, 15_000);
    const texts = await Promise.all(answers);
    for (const text of texts) assert.match(text, /^HTTP\/1\.1 401 [^]*"UNAUTHENTICATED"/);
    for (const socket of sockets) socket.destroy();
  });

  test('churn: wire reads parked on minSeq with a token that is then revoked are answered UNAUTHENTICATED at once', async () => {
    // Before: the connection was closing for the revoked token, but its final ERROR waited for the reads in flight, so
    // they stayed parked until the close gave up on them (the frame timeout, 30 s), holding their places meanwhile.
    const serve = served();
    const admin = readFileSync(join(serve.dataDir, 'admin-token'), 'utf8').trim();
    const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
    const created = await requestJson<{ id: string; token: string }>(serve.url, 'POST', '/v1/auth/tokens', { headers, body: JSON.stringify({ name: 'churn-wire-reader', scopes: ['read:churn/'] }) });
    const wire = await RawWire.ready(serve.wire, created.token);
    for (let id = 1; id <= REVOKED_READS; id++) wire.send(encodeGet(id, Buffer.from(`churn/${id}`), { seq: UNREACHED_SEQ, timeoutMs: PARKED_WAIT_MS }));
    await waitUntil(`${REVOKED_READS} wire reads are parked`, async () => (await seqWaitersAs(serve, admin)) === REVOKED_READS);
    const revokedMs = Date.now();
    await requestJson(serve.url, 'DELETE', `/v1/auth/tokens?id=${created.id}`, { headers });
    const frames = [];
    for (let frame = await wire.next(10_000); frame !== undefined; frame = await wire.next(10_000)) frames.push(frame);
    assert.ok(Date.now() - revokedMs < 10_000, `closed ${Date.now() - revokedMs} ms after the revocation`);
    assert.equal(await seqWaitersAs(serve, admin), 0);
    assert.equal(frames.length, REVOKED_READS + 1, 'an answer to each read, then the connection\'s ERROR');
    for (const frame of frames) assert.match(JSON.stringify(frame), /UNAUTHENTICATED/);
    wire.close();
  });
});
