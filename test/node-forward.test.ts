/**
 * Write forwarding (src/node/forward.ts) against small HTTP servers that stand in for the upstream: the write travels
 * as the formatted transaction through the client's HTTP code; the upstream's Mercury errors keep their code; anything
 * else is UPSTREAM_UNAVAILABLE, whose message says whether the write may have been applied.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { MercuryError, formatTxn, parseTxn, type Txn } from '../src/api/index.js';
import { ForwardsInFlight, forwardWrite } from '../src/node/forward.js';
import { connectNeverCompletes, freePort, handshakeNeverCompletes } from './support/net.js';

const REQUEST: Txn = {
  compares: [{ key: Buffer.from('a'), target: 'version', operator: '=', number: 2 }],
  success: [{ type: 'put', key: Buffer.from([0x61, 0xff]), value: Buffer.from('v\u0001') }],
  failure: [{ type: 'deleteRange', start: Buffer.from('x/'), end: Buffer.alloc(0) }],
};

const servers: Server[] = [];
after(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** An upstream whose answer `handle` writes once it has the whole body. */
async function upstream(handle: (body: string, req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => handle(Buffer.concat(chunks).toString('utf8'), req, res));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function answer(res: ServerResponse, status: number, body: string, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

async function forwardError(url: string | undefined, timeoutMs?: number): Promise<MercuryError> {
  const error = await forwardWrite(url, REQUEST, timeoutMs).then(
    () => assert.fail('the forward succeeded'),
    (error: unknown) => error,
  );
  assert.ok(error instanceof MercuryError, String(error));
  return error;
}

describe('node forward: writes go to the upstream through the client', () => {
  test('node forward: the upstream gets POST /v1/txn with the formatted transaction; its seq comes back', async () => {
    let received: { method?: string; url?: string; type?: string; body: string } | undefined;
    const url = await upstream((body, req, res) => {
      received = { method: req.method, url: req.url, type: req.headers['content-type'], body };
      answer(res, 200, JSON.stringify({ succeeded: false, seq: 41 }));
    });
    assert.deepEqual(await forwardWrite(url, REQUEST), { succeeded: false, seq: 41 });
    assert.equal(received?.method, 'POST');
    assert.equal(received?.url, '/v1/txn');
    assert.equal(received?.type, 'application/json');
    assert.deepEqual(JSON.parse(received.body), JSON.parse(JSON.stringify(formatTxn(REQUEST))));
    assert.deepEqual(parseTxn(JSON.parse(received.body)), REQUEST);
  });

  test('node forward: the hash of the entry that carries the write comes back when the upstream sends it; a malformed one is refused', async () => {
    const hash = 'ab'.repeat(32);
    const url = await upstream((_body, _req, res) => answer(res, 200, JSON.stringify({ succeeded: true, seq: 7, hash })));
    assert.deepEqual(await forwardWrite(url, REQUEST), { succeeded: true, seq: 7, hash: Buffer.from(hash, 'hex') });
    const bad = await upstream((_body, _req, res) => answer(res, 200, JSON.stringify({ succeeded: true, seq: 7, hash: 'xyz' })));
    await assert.rejects(forwardWrite(bad, REQUEST), (error: unknown) => error instanceof MercuryError && error.code === 'UPSTREAM_UNAVAILABLE');
  });

  test('node forward: a Mercury error of the upstream keeps its code, status and details', async () => {
    const url = await upstream((_body, _req, res) =>
      answer(res, 413, JSON.stringify({ error: { code: 'VALUE_TOO_LARGE', message: 'success[0].value is 9 bytes; at most 8', limit: 8 } })),
    );
    const error = await forwardError(url);
    assert.equal(error.code, 'VALUE_TOO_LARGE');
    assert.equal(error.status, 413);
    assert.equal(error.message, 'success[0].value is 9 bytes; at most 8');
    assert.deepEqual(error.details, { limit: 8 });
  });

  test('node forward: no upstream, or one that refuses the connection: UPSTREAM_UNAVAILABLE, not applied', async () => {
    assert.match((await forwardError(undefined)).message, /not connected to an upstream/);
    const refused = await forwardError(`http://127.0.0.1:${await freePort()}`);
    assert.equal(refused.code, 'UPSTREAM_UNAVAILABLE');
    assert.match(refused.message, /never reached the upstream, so it was not applied/);
  });

  test('node forward: an upstream whose connection or TLS handshake never completes: UPSTREAM_UNAVAILABLE, not applied', async () => {
    for (const start of [connectNeverCompletes, handshakeNeverCompletes]) {
      const unfinished = await start();
      try {
        const error = await forwardError(unfinished.url, 300);
        assert.equal(error.code, 'UPSTREAM_UNAVAILABLE');
        assert.match(error.message, /no connection in time.*never reached the upstream, so it was not applied/);
      } finally {
        await unfinished.close();
      }
    }
  });

  test('node forward: an upstream that takes the write and never answers: UPSTREAM_UNAVAILABLE, may have been applied', async () => {
    const url = await upstream(() => {
      // Holds the request: the forward times out after the body was sent.
    });
    const error = await forwardError(url, 200);
    assert.equal(error.code, 'UPSTREAM_UNAVAILABLE');
    assert.match(error.message, /may or may not have been applied/);
  });

  test('node forward: a proxy error page, an unknown code or a malformed success: UPSTREAM_UNAVAILABLE, may have been applied', async () => {
    const cases: [number, string, RegExp][] = [
      [502, '<html>bad gateway</html>', /answered HTTP 502 with a body that is not JSON; not a Mercury answer .*; it may or may not have been applied/],
      [507, JSON.stringify({ error: { code: 'SOMETHING_NEWER', message: 'a code this node does not know' } }), /HTTP 507 with code SOMETHING_NEWER \(a code this node does not know\); it may or may not/],
      [200, JSON.stringify({ seq: 3 }), /answer\.succeeded must be true or false; not a Mercury answer .*; it may or may not/],
      [200, 'not json', /a body that is not JSON .*; it may or may not/],
    ];
    for (const [status, body, message] of cases) {
      const url = await upstream((_body, _req, res) => answer(res, status, body, body.startsWith('{') ? 'application/json' : 'text/html'));
      const error = await forwardError(url);
      assert.equal(error.code, 'UPSTREAM_UNAVAILABLE', body);
      assert.match(error.message, message);
    }
  });
});

describe('node forward: replication finding the upstream silent ends the forwards sent to it', () => {
  test('node forward: a forward ended as its upstream went silent after the request was sent: UPSTREAM_UNAVAILABLE, may have been applied', async () => {
    let received!: () => void;
    const arrived = new Promise<void>((resolve) => (received = resolve));
    const url = await upstream(() => received());
    const forwards = new ForwardsInFlight();
    const forward = forwards.begin(url);
    const pending = forwardWrite(url, REQUEST, 30_000, undefined, undefined, forward.ends.signal).then(
      () => assert.fail('the forward succeeded'),
      (error: unknown) => error,
    );
    await arrived;
    assert.equal(forwards.upstreamSilent(url, 'upstream stale: no progress for 750 ms', 1), 1);
    const error = await pending;
    assert.ok(error instanceof MercuryError, String(error));
    assert.equal(error.code, 'UPSTREAM_UNAVAILABLE');
    assert.match(error.message, /was given up: the upstream stopped answering this replica's replication \(upstream stale: no progress for 750 ms\); it may or may not have been applied/);
    assert.equal(forwards.size, 0);
    assert.equal(forwards.endedSilent, 1);
  });

  test('node forward: only forwards to the silent URL end; new ones to it are refused until an upstream welcomes the replica again', () => {
    const forwards = new ForwardsInFlight();
    const toSilent = forwards.begin('http://a:1');
    const toOther = forwards.begin('http://b:1');
    assert.equal(forwards.upstreamSilent('http://a:1', 'upstream stale: no progress for 750 ms', 3), 1);
    assert.equal(toSilent.ends.signal.aborted, true);
    assert.equal(toOther.ends.signal.aborted, false);
    assert.equal(forwards.size, 1);
    const refusal = forwards.refusal('http://a:1', 3);
    assert.equal(refusal?.code, 'UPSTREAM_UNAVAILABLE');
    assert.match(refusal.message, /the write was not forwarded nor applied/);
    assert.equal(forwards.refusal('http://b:1', 3), undefined, 'nothing was learned about another URL');
    assert.equal(forwards.refusal('http://a:1', 4), undefined, 'a welcome since: the replica has an upstream again');
    assert.equal(forwards.refusal('http://a:1', 3), undefined, 'and the verdict is forgotten');
  });
});
