/**
 * The wire client (src/client/wire.ts) against scripted fake nodes on port 0: what a caller learns when a connection
 * goes away. GOAWAY means the node never read what is unanswered, so those requests (writes included) go again on a
 * new connection; a cut after a write was sent is OutcomeUnknownError, never a resend; a refused connection is a
 * write that may go elsewhere; an ERROR for the connection fails what it did not process with that error.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, test } from 'node:test';
import {
  WireFrameReader,
  WireFrameType,
  decodeRequest,
  encodeError,
  encodeGoaway,
  encodeMissing,
  encodeReady,
  encodeValue,
  encodeWritten,
  type WireRequest,
} from '../src/api/index.js';
import { InvalidAnswerError, NodeClient, NoNodeReachableError, OutcomeUnknownError, UnauthenticatedError, UnknownCodeError, connect } from '../src/index.js';
import { freePort } from './support/net.js';

/**
 * A fake node: answers HELLO with READY (on the connections `ready` says: the others never answer it), then hands each
 * request and its connection's number to `onRequest`.
 */
async function fakeNode(
  onRequest: (request: WireRequest, socket: Socket, connection: number) => void,
  ready: (connection: number) => boolean = () => true,
): Promise<{ url: string; server: Server; connections: () => number }> {
  let connections = 0;
  const server = createServer((socket) => {
    sockets.add(socket);
    const connection = ++connections;
    const reader = new WireFrameReader(1 << 20);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
        if (!('body' in frame)) throw new Error('oversized');
        const request = decodeRequest(frame);
        if (request.type === WireFrameType.HELLO) {
          if (ready(connection)) socket.write(encodeReady(64, 1 << 20));
        }
        else onRequest(request, socket, connection);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { url: `mercury+tcp://127.0.0.1:${(server.address() as AddressInfo).port}`, server, connections: () => connections };
}

const servers: Server[] = [];
const sockets = new Set<Socket>();
after(() => {
  for (const server of servers) server.close();
  // The fake nodes' ends of the connections: clients keep theirs open, idle, as a shared connection does.
  for (const socket of sockets) socket.destroy();
});

const record = { createSeq: 1, modSeq: 2, version: 1, value: Buffer.from('v') };

test('wire client: requests unanswered at GOAWAY, writes included, are sent again on a new connection', async () => {
  const seen: [number, number][] = [];
  const node = await fakeNode((request, socket, connection) => {
    seen.push([connection, request.type]);
    // The first connection takes the requests and goes away without processing them, as an idle node would.
    if (connection === 1) {
      if (seen.length === 2) socket.end(encodeGoaway());
      return;
    }
    socket.write(request.type === WireFrameType.GET ? encodeValue(request.id, 5, record) : encodeWritten(request.id, 6, false));
  });
  const client = connect(node.url);
  const [read, written] = await Promise.all([client.get('a'), client.put('a', 'v')]);
  assert.equal(read?.value.toString(), 'v');
  assert.equal(written.seq, 6);
  assert.equal(node.connections(), 2);
  assert.deepEqual(
    seen.map(([connection]) => connection),
    [1, 1, 2, 2],
  );
});

test('wire client: a connection cut after a write was sent is OutcomeUnknownError, and the write is not sent again', async () => {
  let puts = 0;
  const node = await fakeNode((request, socket) => {
    if (request.type === WireFrameType.PUT) puts++;
    socket.destroy();
  });
  const error = await connect(node.url, { attemptsMax: 3 })
    .put('a', 'v')
    .then(
      () => undefined,
      (failure: unknown) => failure,
    );
  assert.ok(error instanceof OutcomeUnknownError, String(error));
  assert.equal(puts, 1, 'sent once');
});

test('wire client: a refused connection means nothing was sent, so a write moves on to the next URL', async () => {
  const node = await fakeNode((request, socket) => socket.write(encodeWritten(request.id, 9, false)));
  const dead = `mercury+tcp://127.0.0.1:${await freePort()}`;
  const written = await connect([dead, node.url], { retryDelayMsBase: 1, retryDelayMsMax: 5 }).put('a', 'v');
  assert.equal(written.seq, 9);
  const nowhere = await connect(dead, { attemptsMax: 2, retryDelayMsBase: 1, retryDelayMsMax: 5 })
    .put('a', 'v')
    .then(
      () => undefined,
      (failure: unknown) => failure,
    );
  assert.ok(nowhere instanceof NoNodeReachableError, String(nowhere));
});

test('wire client: an ERROR for the connection fails every request it did not process with that error', async () => {
  const node = await fakeNode((_request, socket) => socket.end(encodeError(0, 'UNAUTHENTICATED', 'token 0123456789abcdef was revoked; use another token')));
  const client = connect(node.url);
  const failures = await Promise.all([client.get('a'), client.put('b', 'v')].map((call) => call.then(() => undefined, (failure: unknown) => failure)));
  for (const failure of failures) {
    assert.ok(failure instanceof UnauthenticatedError, String(failure));
    assert.match(failure.message, /revoked/);
  }
});

test('wire client: an ERROR of a code this client does not know keeps the code; one that is not a Mercury error is InvalidAnswerError', async () => {
  const newer = await fakeNode((request, socket) => void socket.write(encodeError(request.id, 'QUOTA_EXCEEDED', 'the prefix a/ holds its 100 keys', { limit: 100 })));
  const unknown = await new NodeClient(newer.url).get('a/k').then(() => undefined, (failure: unknown) => failure);
  assert.ok(unknown instanceof UnknownCodeError, String(unknown));
  assert.equal(unknown.code, 'QUOTA_EXCEEDED');
  assert.equal(unknown.message, 'the prefix a/ holds its 100 keys');
  assert.equal(unknown.details?.limit, 100);
  const broken = await fakeNode((request, socket) => void socket.write(encodeError(request.id, 'quota exceeded', 'm')));
  const invalid = await new NodeClient(broken.url).get('a/k').then(() => undefined, (failure: unknown) => failure);
  assert.ok(invalid instanceof InvalidAnswerError, String(invalid));
  assert.equal(invalid.code, 'PROTOCOL');
  assert.match(invalid.message, /answered an ERROR frame with an error code that is not an UPPER_SNAKE name/);
});

test('wire client: no answer within requestTimeoutMs is a timeout with the request possibly sent', async () => {
  const node = await fakeNode(() => {});
  const error = await connect(node.url, { requestTimeoutMs: 200, attemptsMax: 1 })
    .put('a', 'v')
    .then(
      () => undefined,
      (failure: unknown) => failure,
    );
  assert.ok(error instanceof OutcomeUnknownError, String(error));
  assert.match(error.message, /no answer to put in time/);
});

// Found by an audit (2026-12-06): a connection on which the node stopped answering (a hung node, a path that drops
// packets without a reset) was kept: every later request, and every retry of it, went to it and timed out, and no new
// connection was ever opened while the socket stayed open.
test('wire client: a connection that answered nothing since a request that timed out is replaced by a new one', async () => {
  const node = await fakeNode((request, socket, connection) => {
    // The first connection takes requests and answers none of them.
    if (connection === 1) return;
    socket.write(request.type === WireFrameType.GET ? encodeValue(request.id, 5, record) : encodeWritten(request.id, 6, false));
  });
  const client = connect(node.url, { requestTimeoutMs: 200 });
  const error = await client.put('a', 'v').then(
    () => undefined,
    (failure: unknown) => failure,
  );
  assert.ok(error instanceof OutcomeUnknownError, String(error));
  // A read is retried, on a new connection; a later write goes there too.
  assert.equal((await client.get('a'))?.value.toString(), 'v');
  assert.equal((await client.put('a', 'w')).seq, 6);
  assert.equal(node.connections(), 2);
});

// Found by an audit (2026-12-06): a MISSING answered below the minSeq asked for was taken as the key's absence.
test('wire client: a key answered missing below the minSeq asked for is PROTOCOL', async () => {
  const node = await fakeNode((request, socket) => void socket.write(encodeMissing(request.id, 3)));
  const client = connect(node.url, { attemptsMax: 1 });
  const error = await client.get('a', { minSeq: 10 }).then(
    () => undefined,
    (failure: unknown) => failure,
  );
  assert.ok(error instanceof NoNodeReachableError && error.errors[0] instanceof InvalidAnswerError && error.errors[0].code === 'PROTOCOL', String(error));
  assert.match(error.message, /answered at seq 3, below the minSeq 10/);
  assert.equal(await client.get('a', { minSeq: 3 }), undefined);
});

// Found by an audit (2026-12-06): frames that break the protocol were UnavailableError UNAVAILABLE ("cannot reach"),
// and a value with createSeq, modSeq and version 0 was taken as it came.
test('wire client: a frame that does not answer the request, an unknown frame, a value of seqs 0 are PROTOCOL', async () => {
  const zero = { ...record, createSeq: 0, modSeq: 0, version: 0 };
  const unknown = Buffer.from([0, 0, 0, 5, 0x99, 0, 0, 0, 1]);
  const cases: [(id: number) => Buffer, 'get' | 'put', RegExp][] = [
    [(id) => encodeValue(id, 5, record), 'put', /answered a frame of type 0x82, which does not answer a put/],
    [() => unknown, 'get', /not a Mercury wire port, or a broken connection \(.*unknown frame type 0x99/],
    [(id) => encodeValue(id, 5, zero), 'get', /createSeq 0, modSeq 0, version 0; each must be >= 1/],
  ];
  for (const [frame, call, pattern] of cases) {
    const node = await fakeNode((request, socket) => void socket.write(frame(request.id)));
    const client = connect(node.url, { attemptsMax: 1 });
    const error = await (call === 'put' ? client.put('a', 'v') : client.get('a')).then(
      () => undefined,
      (failure: unknown) => failure,
    );
    const invalid = error instanceof OutcomeUnknownError ? error.cause : error instanceof NoNodeReachableError ? error.errors[0] : error;
    assert.ok(invalid instanceof InvalidAnswerError && invalid.code === 'PROTOCOL', String(error));
    assert.match(invalid.message, pattern);
  }
});

// Found by an audit (2026-12-06): a connection the node never answered HELLO on was kept for ever (every request
// expired on it, unsent), and one on which the node trickled a frame that never ended too (bytes came, so it did not
// count as stuck): each later request timed out on it, and no new connection was opened.
test('wire client: a connection never READY, or trickling a frame that never ends, is replaced by a new one', async () => {
  const trickles: NodeJS.Timeout[] = [];
  after(() => trickles.forEach(clearInterval));
  for (const stuck of ['never READY', 'trickle'] as const) {
    const node = await fakeNode(
      (request, socket, connection) => {
        if (connection > 1) return void socket.write(encodeValue(request.id, 5, record));
        // A VALUE frame announced 1 MiB long, then a byte every 20 ms.
        const head = Buffer.alloc(9);
        head.writeUInt32BE(1 << 20, 0);
        head[4] = WireFrameType.VALUE;
        head.writeUInt32BE(request.id, 5);
        socket.write(head);
        trickles.push(setInterval(() => socket.destroyed || socket.write('x'), 20));
      },
      (connection) => stuck === 'trickle' || connection > 1,
    );
    const client = connect(node.url, { requestTimeoutMs: 300, attemptsMax: 1 });
    const error = await client.get('a').then(
      () => undefined,
      (failure: unknown) => failure,
    );
    assert.ok(error instanceof NoNodeReachableError, `${stuck}: ${String(error)}`);
    assert.equal((await client.get('a'))?.value.toString(), 'v', stuck);
    assert.equal(node.connections(), 2, stuck);
  }
});

// Found by an audit (2026-12-06): after a GOAWAY the client only half-closed its connection and kept the socket until
// the node closed its side; a node that never did made the client hold a socket for each GOAWAY (800 after 100 gets).
test('wire client: after GOAWAY the client closes the connection even if the node keeps its side open', async () => {
  const open = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    const reader = new WireFrameReader(1 << 20);
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
        if (!('body' in frame)) throw new Error('oversized');
        socket.write(decodeRequest(frame).type === WireFrameType.HELLO ? encodeReady(64, 1 << 20) : encodeGoaway());
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  const client = connect(`mercury+tcp://127.0.0.1:${(server.address() as AddressInfo).port}`, { requestTimeoutMs: 1_000, attemptsMax: 1 });
  for (let i = 0; i < 10; i++) await assert.rejects(client.get('a'), /closed two connections before answering/);
  // A socket the client still holds takes these bytes; one it closed answers them with a reset.
  const deadline = Date.now() + 2_000;
  while (open.size > 0 && Date.now() < deadline) {
    for (const socket of open) socket.write(encodeGoaway());
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (const socket of open) socket.destroy();
  assert.equal(open.size, 0, 'every connection the client was told to leave is closed');
});
