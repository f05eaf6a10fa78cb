/**
 * Authorization before the body, on a real `mercury serve --auth required` (production limits): a request without a
 * valid credential, or with one whose scopes the URL already rules out, is answered from its headers. Its body is
 * never buffered nor charged to the in-flight body budget (258 MiB), so clients without a token cannot take that
 * budget from those with one. Before, an unauthenticated transaction body (up to ~129 MiB) was read and held first.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { BODY_BYTES_IN_FLIGHT_MAX } from '../src/limits.js';
import { assertError, parseRawResponse, parseRawResponses, rawExchange, request, requestJson, type RawResponse } from './support/http.js';
import { MiB } from './support/hostile.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

/** The body an attacker declares: more than a third of the budget, so three of them would have taken all of it. */
const DECLARED_BYTES = 100 * MiB;
const ATTACKERS = Math.floor(BODY_BYTES_IN_FLIGHT_MAX / DECLARED_BYTES) + 1;
/** "At once": the refusal comes from the headers, long before a slow sender has sent much. */
const ANSWER_MS_MAX = 1_000;
/** What a slow sender may have handed to the kernel before the answer (64 KiB per 20 ms is 3.2 MiB/s). */
const SENT_BEFORE_ANSWER_BYTES_MAX = 4 * MiB;
const SLOW_CHUNK_BYTES = 64 * 1024;
const SLOW_INTERVAL_MS = 20;
const AUTHORIZED_TXN_BYTES = 60 * MiB;

interface SlowBody {
  /** The answer, how long after the headers it came, and how many body bytes had been sent by then. */
  readonly answered: Promise<{ response: RawResponse; afterMs: number; sentBytes: number }>;
  /** Whether the node closed the connection. */
  closed(): boolean;
  stop(): void;
}

/**
 * Sends `head` and then a body of spaces slowly (a chunk every SLOW_INTERVAL_MS, only when the socket took the last
 * one), and keeps sending after the answer: a client that does not stop, on a connection the node keeps open while it
 * drops the body.
 */
function sendSlowly(baseUrl: string, head: string): SlowBody {
  const url = new URL(baseUrl);
  const socket: Socket = connect(Number(url.port), url.hostname);
  socket.on('error', () => {});
  let sent = 0;
  let closed = false;
  let started = 0;
  const chunk = Buffer.alloc(SLOW_CHUNK_BYTES, ' ');
  const timer = setInterval(() => {
    if (socket.destroyed || socket.writableLength > 0 || started === 0) return;
    socket.write(chunk);
    sent += chunk.length;
  }, SLOW_INTERVAL_MS);
  socket.once('connect', () => {
    socket.write(head);
    started = performance.now();
  });
  socket.once('close', () => {
    closed = true;
    clearInterval(timer);
  });
  const received: Buffer[] = [];
  const answered = new Promise<{ response: RawResponse; afterMs: number; sentBytes: number }>((resolve, reject) => {
    socket.on('data', (data: Buffer) => {
      received.push(data);
      const text = Buffer.concat(received).toString('latin1');
      const headerEnd = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, headerEnd));
      if (headerEnd > 0 && length !== null && text.length >= headerEnd + 4 + Number(length[1]))
        resolve({ response: parseRawResponse(text.slice(0, headerEnd + 4 + Number(length[1]))), afterMs: performance.now() - started, sentBytes: sent });
    });
    socket.once('close', () => reject(new Error(`closed without a complete answer: ${JSON.stringify(Buffer.concat(received).toString('latin1').slice(0, 200))}`)));
  });
  answered.catch(() => {});
  return {
    answered,
    closed: () => closed,
    stop: () => {
      clearInterval(timer);
      socket.destroy();
    },
  };
}

function head(baseUrl: string, method: string, path: string, contentLength: number, headers: Record<string, string> = {}): string {
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return `${method} ${path} HTTP/1.1\r\nHost: ${new URL(baseUrl).host}\r\nContent-Type: application/json\r\nContent-Length: ${contentLength}\r\n${extra}\r\n`;
}

function errorOf(response: RawResponse): { code: string; message: string } {
  return (JSON.parse(response.body) as { error: { code: string; message: string } }).error;
}

describe('auth before body: refused from the headers, the body neither held nor charged', () => {
  const dir = makeTempDir('auth-before-body');
  let node: ServeProcess;
  let admin: string;
  const open: SlowBody[] = [];

  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

  async function bodyBytesInFlight(): Promise<number> {
    const text = (await request(node.url, 'GET', '/metrics', { headers: bearer(admin) })).body.toString();
    const line = text.split('\n').find((candidate) => candidate.startsWith('mercury_http_body_bytes_in_flight '));
    assert.ok(line !== undefined, 'the node exposes mercury_http_body_bytes_in_flight');
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }

  async function createToken(name: string, scopes: string[]): Promise<{ id: string; token: string }> {
    return requestJson(node.url, 'POST', '/v1/auth/tokens', { headers: { ...bearer(admin), 'content-type': 'application/json' }, body: JSON.stringify({ name, scopes }) });
  }

  /** Every slow sender is answered at once with `status`, having sent little, and its connection is still open. */
  async function assertRefusedAtOnce(bodies: readonly SlowBody[], status: number): Promise<RawResponse[]> {
    const responses: RawResponse[] = [];
    for (const body of bodies) {
      const { response, afterMs, sentBytes } = await body.answered;
      assert.equal(response.status, status, response.body);
      assert.ok(afterMs < ANSWER_MS_MAX, `answered after ${afterMs.toFixed(0)} ms`);
      assert.ok(sentBytes < SENT_BEFORE_ANSWER_BYTES_MAX, `answered after ${sentBytes} body bytes were sent`);
      // Dropped as it arrives, not cut off: the answer cannot be lost to a reset, and the connection stays usable.
      assert.notEqual(response.headers.connection, 'close');
      assert.equal(body.closed(), false, 'the node keeps the connection open while it drops the body');
      responses.push(response);
    }
    return responses;
  }

  before(async () => {
    node = await startServe(join(dir, 'node'), ['--auth', 'required']);
    admin = readFileSync(join(dir, 'node', 'admin-token'), 'utf8').trim();
  });
  after(async () => {
    for (const body of open) body.stop();
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('auth before body: txn bodies of clients without a token are refused 401 at once, and an authorized 60 MiB txn is accepted beside them', async () => {
    const bodies = Array.from({ length: ATTACKERS }, () => sendSlowly(node.url, head(node.url, 'POST', '/v1/txn', DECLARED_BYTES)));
    open.push(...bodies);
    for (const response of await assertRefusedAtOnce(bodies, 401)) {
      const error = errorOf(response);
      assert.equal(error.code, 'UNAUTHENTICATED');
      assert.equal(error.message, 'no credential: send Authorization: Bearer TOKEN (mercury --token, --token-file or MERCURY_TOKEN)');
    }
    // They declared more than the whole budget and are still sending: none of it is reserved.
    assert.equal(await bodyBytesInFlight(), 0);
    const value = 'accepted beside them';
    const json = `{"success":[{"op":"put","key":"auth/big","value":"${value}"}]`;
    const body = Buffer.alloc(AUTHORIZED_TXN_BYTES, ' ');
    body.write(json, 0, 'latin1');
    body.write('}', AUTHORIZED_TXN_BYTES - 1, 'latin1');
    const accepted = await request(node.url, 'POST', '/v1/txn', { headers: { ...bearer(admin), 'content-type': 'application/json' }, body, timeoutMs: 60_000 });
    assert.equal(accepted.status, 200, accepted.body.toString());
    assert.equal((await request(node.url, 'GET', '/v1/kv/auth/big', { headers: bearer(admin) })).body.toString(), value);
    for (const slow of bodies) assert.equal(slow.closed(), false, 'the refused clients were still connected throughout');
    for (const slow of bodies) slow.stop();
  });

  test('auth before body: an unknown or revoked token is refused 401 before its body, with the existing message', async () => {
    const revoked = await createToken('revoked-writer', ['write:app/']);
    await requestJson(node.url, 'DELETE', `/v1/auth/tokens?id=${revoked.id}`, { headers: bearer(admin) });
    const slow = sendSlowly(node.url, head(node.url, 'POST', '/v1/txn', DECLARED_BYTES, bearer(revoked.token)));
    open.push(slow);
    const [response] = await assertRefusedAtOnce([slow], 401);
    assert.deepEqual(errorOf(response!), { code: 'UNAUTHENTICATED', message: `unknown token ${revoked.id}: never created here, or revoked` });
    assert.equal(await bodyBytesInFlight(), 0);
    slow.stop();
  });

  test('auth before body: a token without write scope on PUT /v1/kv/x is refused 403 before the body', async () => {
    const reader = await createToken('reader', ['read:app/']);
    const slow = sendSlowly(node.url, head(node.url, 'PUT', '/v1/kv/x', 8 * MiB, bearer(reader.token)));
    open.push(slow);
    const [response] = await assertRefusedAtOnce([slow], 403);
    assert.deepEqual(errorOf(response!), {
      code: 'PERMISSION_DENIED',
      message: `token "reader" (${reader.id}) may not write key "x": it needs write:x or write on a prefix of it; it holds read:app/`,
      needs: 'write:x or write on a prefix of it',
      principal: 'reader',
    });
    assert.equal(await bodyBytesInFlight(), 0);
    slow.stop();
    // The same token can still do what it holds.
    assertError(await request(node.url, 'GET', '/v1/kv/app/none', { headers: bearer(reader.token) }), 'KEY_NOT_FOUND');
  });

  test('auth before body: a token that can touch no key (replicate only) is refused 403 on POST /v1/txn before the body; admin routes too', async () => {
    const replicator = await createToken('replicator', ['replicate']);
    const txn = sendSlowly(node.url, head(node.url, 'POST', '/v1/txn', DECLARED_BYTES, bearer(replicator.token)));
    const tokens = sendSlowly(node.url, head(node.url, 'POST', '/v1/auth/tokens', 60 * 1024, bearer(replicator.token)));
    open.push(txn, tokens);
    const [txnAnswer, tokensAnswer] = await assertRefusedAtOnce([txn, tokens], 403);
    assert.deepEqual(errorOf(txnAnswer!).code, 'PERMISSION_DENIED');
    assert.equal(
      errorOf(txnAnswer!).message,
      `token "replicator" (${replicator.id}) may not send a transaction: it needs a read:PREFIX or write:PREFIX scope (or admin); it holds replicate`,
    );
    assert.equal(errorOf(tokensAnswer!).message, `token "replicator" (${replicator.id}) may not create tokens: it needs admin; it holds replicate`);
    txn.stop();
    tokens.stop();
  });

  test('auth before body: a refused request is followed by the pipelined requests after it, each answered in order', async () => {
    const host = new URL(node.url).host;
    const text = await rawExchange(
      node.url,
      `PUT /v1/kv/app/a HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\n\r\nhello` +
        `POST /v1/txn HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"success":[]}` +
        `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    );
    const answers = parseRawResponses(text);
    assert.deepEqual(
      answers.map((answer) => answer.status),
      [401, 401, 200],
    );
    // Nothing of the refused bodies was taken for a request.
    assert.equal(await bodyBytesInFlight(), 0);
  });
});
