/**
 * Bad input on the watch endpoint: every malformed or refused message gets an error message with a stable code (and
 * the connection goes on), protocol violations get their close code, other upgrade paths get 404; and through all of
 * it the node keeps serving every other watcher and never logs an internal error.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { WebSocket } from 'ws';
import type { Principal } from '../src/auth/index.js';
import { systemClock } from '../src/clock/index.js';
import { validateConfig } from '../src/config/index.js';
import type { EncodedEntry } from '../src/log/index.js';
import { Registry } from '../src/metrics/index.js';
import { createHttpServer } from '../src/server/index.js';
import { Store } from '../src/store/index.js';
import { KEY_BYTES_MAX } from '../src/limits.js';
import type { Logger } from '../src/logging/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../src/node/index.js';
import { WATCH_LIMITS_TEST, WatchHub } from '../src/watch/index.js';
import { WatchCloseCode, WatchErrorCode } from '../src/api/index.js';
import { assertError, request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { sampleSeeded, seeded } from './support/seed.js';
import { clientFrame, rawWatchSocket, WatchClient, watchUrl, type ServerMessage } from './support/watch.js';

type ErrorMessage = Extract<ServerMessage, { type: 'error' }>;
const KNOWN_CODES = new Set<string>(Object.values(WatchErrorCode));
/** The one message each client message is answered with (events and progress of other subscriptions aside). */
const isAnswer = (message: ServerMessage): boolean => message.type === 'error' || message.type === 'subscribed' || message.type === 'unsubscribed';

describe('watch bad input', () => {
  let dir: string;
  let node: MercuryNode;
  let url: string;
  let bystander: WatchClient;
  const errors: string[] = [];
  const clients: WatchClient[] = [];

  const connect = async (): Promise<WatchClient> => {
    const client = await WatchClient.connect(url);
    clients.push(client);
    return client;
  };
  const put = async (key: string, value: string): Promise<number> => (await requestJson<{ seq: number }>(url, 'PUT', `/v1/kv/${key}`, { body: value })).seq;

  /** Sends a raw text frame and returns the error it is answered with. */
  const refused = async (client: WatchClient, text: string, code: string, idJson?: string): Promise<ErrorMessage> => {
    const from = client.messages.length;
    client.socket.send(text);
    const answer = (await client.waitFor(isAnswer, 2_000, from)) as ErrorMessage;
    assert.equal(answer.type, 'error', `${text} -> ${JSON.stringify(answer)}`);
    assert.equal(answer.code, code, `${text} -> ${JSON.stringify(answer)}`);
    assert.ok(answer.message.length > 10, 'the message says what is wrong');
    if (idJson !== undefined) assert.equal(JSON.stringify(answer.id), idJson, 'the error names the subscription');
    return answer;
  };

  before(async () => {
    dir = makeTempDir('watch-bad');
    const logger: Logger = {
      log(level, message, fields) {
        if (level === 'error') errors.push(`${message} ${JSON.stringify(fields)}`);
      },
      child: () => logger,
    };
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', logger, limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST }) });
    url = node.url;
    // A well-behaved watcher that must see every change while the others misbehave.
    bystander = await connect();
    await bystander.subscribe('all', ['']);
  });

  after(async () => {
    // The bystander got every entry, gap-free, through everything the other clients did.
    const head = (await requestJson<{ seq: number }>(url, 'GET', '/v1/status')).seq;
    await bystander.waitForSeq('all', head);
    assert.deepEqual(
      bystander.eventsOf('all').map((message) => message.seq),
      Array.from({ length: head }, (_, i) => i + 1),
    );
    assert.deepEqual(errors, [], 'no internal error was logged');
    for (const client of clients) client.terminate();
    await node.close();
    removeDir(dir);
  });

  test('watch: malformed and refused messages get an error with a stable code, and the connection goes on', async () => {
    const client = await connect();
    await refused(client, '{"type":"subscribe",', 'INVALID_JSON');
    await refused(client, '[1,2]', 'INVALID_ARGUMENT');
    await refused(client, '"subscribe"', 'INVALID_ARGUMENT');
    await refused(client, '{"id":1}', 'UNKNOWN_MESSAGE_TYPE');
    await refused(client, '{"type":"watch","id":1}', 'UNKNOWN_MESSAGE_TYPE');
    await refused(client, '{"type":"subscribe","prefixes":["a/"]}', 'INVALID_ARGUMENT');
    await refused(client, '{"type":"subscribe","id":{},"prefixes":["a/"]}', 'INVALID_ARGUMENT');
    await refused(client, '{"type":"subscribe","id":1.5,"prefixes":["a/"]}', 'INVALID_ARGUMENT');
    await refused(client, JSON.stringify({ type: 'subscribe', id: 'i'.repeat(65), prefixes: ['a/'] }), 'INVALID_ARGUMENT');
    await refused(client, '{"type":"subscribe","id":"s"}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":[]}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":"a/"}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":[7]}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixesBase64":["not base64!"]}', 'INVALID_ARGUMENT', '"s"');
    // Half of a surrogate pair encodes no character; it was watched as the bytes EF BF BD (audit of 2026-12-06). The
    // HTTP API refuses it in a body with the same code.
    for (const prefix of ['a/\\ud800', '\\udc00', 'a/\\udbff\\u0041'])
      await refused(client, `{"type":"subscribe","id":"s","prefixes":["ok/","${prefix}"]}`, 'LONE_SURROGATE', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefix":"a/","prefixes":["a/"]}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, JSON.stringify({ type: 'subscribe', id: 's', prefixes: ['é'.repeat(KEY_BYTES_MAX / 2 + 1)] }), 'PREFIX_TOO_LARGE', '"s"');
    await refused(client, JSON.stringify({ type: 'subscribe', id: 's', prefixes: Array.from({ length: 17 }, (_, i) => `p${i}/`) }), 'TOO_MANY_PREFIXES', '"s"');
    for (const fromSeq of [0, -1, 1.5, '3', null])
      await refused(client, JSON.stringify({ type: 'subscribe', id: 's', prefixes: ['a/'], fromSeq }), 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":["a/"],"filters":{"puts":false,"deletes":false}}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":["a/"],"filters":{"puts":"yes"}}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":["a/"],"filters":{"values":false}}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":["a/"],"filters":[]}', 'INVALID_ARGUMENT', '"s"');
    await refused(client, '{"type":"unsubscribe","id":"nobody"}', 'UNKNOWN_ID', '"nobody"');
    await refused(client, '{"type":"unsubscribe","id":"s","extra":1}', 'INVALID_ARGUMENT', '"s"');

    // After all that, the same connection subscribes and receives normally, including a prefix of any bytes.
    assert.equal((await client.subscribe('s', ['ok/'])).type, 'subscribed');
    await refused(client, '{"type":"subscribe","id":"s","prefixes":["other/"]}', 'DUPLICATE_ID', '"s"');
    // A whole pair is one character, and is watched as its UTF-8 bytes.
    assert.equal((await client.subscribe('pair', ['\u{1F600}/'])).type, 'subscribed');
    const binaryPrefix = Buffer.from([0xff, 0x00, 0x2f]);
    assert.equal((await client.subscribe('bin', [], { prefixesBase64: [binaryPrefix.toString('base64')] })).type, 'subscribed');
    const seq = await put('ok/key', 'fine');
    const key = Buffer.concat([binaryPrefix, Buffer.from([0x80])]);
    const binarySeq = (
      await requestJson<{ seq: number }>(url, 'POST', '/v1/txn', {
        body: JSON.stringify({ success: [{ op: 'put', keyBase64: key.toString('base64'), value: 'v' }] }),
        headers: { 'content-type': 'application/json' },
      })
    ).seq;
    await client.waitForSeq('s', seq);
    await client.waitForSeq('bin', binarySeq);
    assert.deepEqual(client.eventsOf('s').map((message) => message.seq), [seq]);
    assert.deepEqual(client.eventsOf('bin').at(-1)?.events, [
      { type: 'put', key: key.toString('base64'), keyEncoding: 'base64', value: 'v', valueEncoding: 'utf8', modSeq: binarySeq },
    ]);
    assert.match(node.metrics.render(), /^mercury_watch_refused_total\{code="INVALID_ARGUMENT"\} [1-9]/m);
  });

  test('watch: values nested 20,000 deep anywhere in a message are refused with an error, and the node goes on', async () => {
    // The audit of 2026-12-06 (ws-deep-type): a `type` that was an array 20,000 deep, 40 KB, under the message limit.
    // The node's error message JSON.stringify()d it, the RangeError escaped the socket's data handler, and the node
    // exited. Every field gets such a value here; each is answered, and the connection goes on.
    const client = await connect();
    const depth = 20_000;
    for (const deep of [`${'['.repeat(depth)}${']'.repeat(depth)}`, `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`]) {
      const answer = await refused(client, `{"type":${deep}}`, 'UNKNOWN_MESSAGE_TYPE');
      assert.match(answer.message, /^unknown message type (an array of 1 items|an object);/);
      await refused(client, `{"type":"subscribe","id":${deep},"prefixes":["a/"]}`, 'INVALID_ARGUMENT');
      await refused(client, `{"type":"subscribe","id":"d","prefixes":${deep}}`, 'INVALID_ARGUMENT', '"d"');
      await refused(client, `{"type":"subscribe","id":"d","prefixesBase64":${deep}}`, 'INVALID_ARGUMENT', '"d"');
      await refused(client, `{"type":"subscribe","id":"d","prefixes":["a/"],"fromSeq":${deep}}`, 'INVALID_ARGUMENT', '"d"');
      await refused(client, `{"type":"subscribe","id":"d","prefixes":["a/"],"afterHash":${deep}}`, 'INVALID_ARGUMENT', '"d"');
      await refused(client, `{"type":"subscribe","id":"d","prefixes":["a/"],"filters":${deep}}`, 'INVALID_ARGUMENT', '"d"');
      await refused(client, `{"type":"unsubscribe","id":"d","extra":${deep}}`, 'INVALID_ARGUMENT', '"d"');
    }
    assert.equal((await client.subscribe('d', ['deep/'])).type, 'subscribed');
    const seq = await put('deep/k', 'still serving');
    await client.waitForSeq('d', seq);
  });

  test('watch: a connection holds at most the subscription limit', async () => {
    const client = await connect();
    for (let i = 0; i < WATCH_LIMITS_TEST.subscriptionsPerConnectionMax; i++) assert.equal((await client.subscribe(i, [`many/${i}/`])).type, 'subscribed');
    await refused(client, JSON.stringify({ type: 'subscribe', id: 'one more', prefixes: ['many/'] }), 'TOO_MANY_SUBSCRIPTIONS', '"one more"');
    // Unsubscribing makes room again.
    client.send({ type: 'unsubscribe', id: 0 });
    await client.waitFor((message) => message.type === 'unsubscribed' && message.id === 0);
    assert.equal((await client.subscribe('one more', ['many/'])).type, 'subscribed');
    const seq = await put('many/3/k', 'v');
    await client.waitForSeq(3, seq);
    assert.deepEqual(client.eventsOf(3).map((message) => message.seq), [seq]);
    assert.deepEqual(client.eventsOf('one more').map((message) => message.seq), [seq]);
  });

  test('watch: the subscriptions of a connection hold a bounded number of prefix bytes, however few they are', async () => {
    // The hostile watcher: subscriptions of the most and longest prefixes, each one valid, on one connection. Before the
    // byte budget all of them were held (64 of 16 KiB in production: about 5 MiB of node memory per connection).
    const client = await connect();
    const maximal = (n: number): string[] => Array.from({ length: WATCH_LIMITS_TEST.prefixesPerSubscriptionMax }, (_, i) => `big/${n}/${i}/`.padEnd(KEY_BYTES_MAX, 'x'));
    const fitting = Math.floor(WATCH_LIMITS_TEST.prefixBytesPerConnectionMax / (WATCH_LIMITS_TEST.prefixesPerSubscriptionMax * KEY_BYTES_MAX));
    assert.ok(fitting >= 1 && fitting < WATCH_LIMITS_TEST.subscriptionsPerConnectionMax, 'the byte budget, not the count, is what this test reaches');
    for (let n = 0; n < fitting; n++) assert.equal((await client.subscribe(n, maximal(n))).type, 'subscribed');
    const answer = await refused(client, JSON.stringify({ type: 'subscribe', id: 'more', prefixes: maximal(fitting) }), 'TOO_MANY_PREFIXES', '"more"');
    assert.match(answer.message, new RegExp(`at most ${WATCH_LIMITS_TEST.prefixBytesPerConnectionMax} bytes of prefixes`));
    // Unsubscribing gives the bytes back; the connection and its other subscriptions go on.
    client.send({ type: 'unsubscribe', id: 0 });
    await client.waitFor((message) => message.type === 'unsubscribed' && message.id === 0);
    assert.equal((await client.subscribe('more', maximal(fitting))).type, 'subscribed');
    const seq = await put(maximal(1)[0]!, 'v'); // a key as long as the prefix: the prefix itself
    await client.waitForSeq(1, seq);
    assert.deepEqual(client.eventsOf(1).map((message) => message.seq), [seq]);
    // A fresh connection takes a maximal subscription whatever others hold: the client library opens one per watch.
    assert.equal((await (await connect()).subscribe('alone', maximal(99))).type, 'subscribed');
  });

  test('watch: an oversized frame is closed with 1009, a binary frame with 1003, invalid UTF-8 with 1007', async () => {
    const oversized = await connect();
    oversized.socket.send(JSON.stringify({ type: 'subscribe', id: 1, prefixes: ['x'.repeat(WATCH_LIMITS_TEST.clientMessageBytesMax)] }));
    assert.equal((await oversized.closed).code, WatchCloseCode.MESSAGE_TOO_BIG);

    const binary = await connect();
    binary.socket.send(Buffer.from('{"type":"subscribe","id":1,"prefixes":["a/"]}'), { binary: true });
    const closed = await binary.closed;
    assert.equal(closed.code, WatchCloseCode.UNSUPPORTED_DATA);
    assert.match(closed.reason, /binary frames/);

    const invalid = await connect();
    invalid.socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    assert.equal((await invalid.closed).code, WatchCloseCode.INVALID_PAYLOAD);
    await put('after/closes', 'still serving');
  });

  test('watch: a frame or message that does not arrive in full within the frame timeout is closed with 1008; a slow one in time is served', async () => {
    // The audit of 2026-12-06 (ws-partial-hold, ws-partial-fill, ws-announced): a connection's partial frame was held
    // for as long as its peer liked, up to the 128 KiB message limit on each of thousands of connections.
    const timeoutMs = WATCH_LIMITS_TEST.frameTimeoutMs;
    const subscribe = Buffer.from('{"type":"subscribe","id":"slow","prefixes":["slow/"]}');
    const announced = await rawWatchSocket(url); // a header announcing almost the limit, and a few bytes of it
    const big = clientFrame(true, 0x1, Buffer.alloc(WATCH_LIMITS_TEST.clientMessageBytesMax - 1, 0x20));
    announced.socket.write(big.subarray(0, 100));
    // Each deadline runs from that connection's first byte of the frame: the awaits below can take long on a busy machine.
    const announcedMs = performance.now();
    const fragmented = await rawWatchSocket(url); // a first fragment, then pings, never the last fragment
    fragmented.socket.write(clientFrame(false, 0x1, subscribe.subarray(0, 10)));
    const fragmentedMs = performance.now();
    const pinging = setInterval(() => fragmented.socket.write(clientFrame(true, 0x9, Buffer.from('p'))), timeoutMs / 5);
    const slow = await rawWatchSocket(url); // a subscribe in two writes, well within the deadline
    let slowAnswers = '';
    slow.socket.on('data', (chunk: Buffer) => (slowAnswers += chunk.toString('latin1')));
    const frame = clientFrame(true, 0x1, subscribe);
    slow.socket.write(frame.subarray(0, 20));
    try {
      await new Promise((resolve) => setTimeout(resolve, timeoutMs / 4));
      slow.socket.write(frame.subarray(20));
      for (const { closed, sentMs } of [
        { ...announced, sentMs: announcedMs },
        { ...fragmented, sentMs: fragmentedMs },
      ]) {
        const close = await Promise.race([
          closed,
          new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error('the connection was not closed at its deadline')), timeoutMs * 5)),
        ]);
        assert.equal(close.code, WatchCloseCode.POLICY_VIOLATION);
        assert.match(close.reason, new RegExp(`not received in full within ${timeoutMs} ms`));
        assert.ok(performance.now() - sentMs >= timeoutMs - 50, 'not before the deadline');
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.match(slowAnswers, /"type":"subscribed","id":"slow"/, 'a message that arrives in time is served');
      assert.ok(!slow.socket.destroyed, 'and its connection goes on');
    } finally {
      clearInterval(pinging);
      for (const { socket } of [announced, fragmented, slow]) socket.destroy();
    }
    await put('after/timeouts', 'still serving');
  });

  test('watch: other upgrade paths get 404; a plain request of the watch path is told to open a WebSocket (426)', async () => {
    const socket = new WebSocket(watchUrl(url, '/v1/other'));
    const status = await new Promise<number>((resolve, reject) => {
      socket.once('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0);
        res.resume();
      });
      socket.once('open', () => reject(new Error('upgrade on /v1/other was accepted')));
      socket.once('error', () => {});
    });
    socket.terminate();
    assert.equal(status, 404);
    // It was 404 "no route /v1/watch" (audit of 2026-12-06), which says the endpoint does not exist.
    const plain = await request(url, 'GET', '/v1/watch');
    assert.match(assertError(plain, 'UPGRADE_REQUIRED').message, /open a WebSocket/);
    assert.equal(plain.status, 426);
    assert.equal(plain.headers.upgrade, 'websocket');
    const head = await request(url, 'HEAD', '/v1/watch');
    assert.equal(head.status, 426);
    assert.match(assertError(await request(url, 'POST', '/v1/watch', { body: '{}' }), 'METHOD_NOT_ALLOWED').message, /allowed: GET, HEAD/);
  });

  test('watch: a handshake the node cannot accept is answered 400 in the JSON error form, naming the versions it speaks', async () => {
    const headers = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };
    const badVersion = await request(url, 'GET', '/v1/watch', { headers: { ...headers, 'sec-websocket-version': '12' } });
    assert.match(assertError(badVersion, 'BAD_REQUEST').message, /Sec-WebSocket-Version/);
    assert.equal(badVersion.headers['sec-websocket-version'], '13, 8');
    const badKey = await request(url, 'GET', '/v1/watch', { headers: { ...headers, 'sec-websocket-key': 'short', 'sec-websocket-version': '13' } });
    assert.match(assertError(badKey, 'BAD_REQUEST').message, /Sec-WebSocket-Key/);
    await put('after/handshakes', 'still serving');
  });

  test('watch: random messages are each answered with a known error or an acknowledgement', async () => {
    const client = await connect();
    const message = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value)),
      fc
        .record(
          {
            type: fc.constantFrom('subscribe', 'unsubscribe', 'other'),
            id: fc.oneof(fc.string({ maxLength: 70 }), fc.integer(), fc.double(), fc.constant(null)),
            prefixes: fc.oneof(fc.array(fc.string({ maxLength: 8 }), { maxLength: 20 }), fc.jsonValue({ maxDepth: 1 })),
            fromSeq: fc.oneof(fc.integer({ min: -2, max: 100 }), fc.jsonValue({ maxDepth: 1 })),
            filters: fc.oneof(fc.record({ puts: fc.boolean(), deletes: fc.boolean(), keysOnly: fc.boolean() }, { requiredKeys: [] }), fc.jsonValue({ maxDepth: 1 })),
          },
          { requiredKeys: ['type'] },
        )
        .map((value) => JSON.stringify(value)),
    );
    // Seeded, so that a message the node mishandles can be sent again (the failure names the seed).
    const samples = sampleSeeded(message, 300);
    await seeded(async () => {
      for (const text of samples) {
        const from = client.messages.length;
        client.socket.send(text);
        const answer = await client.waitFor(isAnswer, 2_000, from);
        if (answer.type === 'error') assert.ok(KNOWN_CODES.has(answer.code), `${text} -> ${JSON.stringify(answer)}`);
        else if (answer.type === 'subscribed') {
          // Keep the connection under its subscription limit.
          const next = client.messages.length;
          client.send({ type: 'unsubscribe', id: answer.id });
          assert.deepEqual(await client.waitFor(isAnswer, 2_000, next), { type: 'unsubscribed', id: answer.id });
        }
      }
    });
    assert.equal(client.socket.readyState, client.socket.OPEN);
  });
});

test('watch: a message whose decoding fails on a bug closes only its connection (1011), logged and counted; the node goes on', async () => {
  // What no rule of the protocol throws (here a principal whose scopes cannot be read, standing for any bug met while
  // decoding) used to escape the socket's data handler and end the process (audit of 2026-12-06). It now closes that
  // connection with 1011, logs the error and counts it; the other watchers are served as before.
  const dir = makeTempDir('watch-bug');
  const store = Store.open({ path: dir });
  const put = (key: string): EncodedEntry => store.commit(systemClock.nowMs(), (view) => view.apply({ type: 'put', key: Buffer.from(key), value: Buffer.from('v') }))!;
  const scopes = { read: [Buffer.alloc(0)], write: [], admin: false, replicate: false };
  const broken: Principal = {
    name: 'broken',
    id: 'b',
    get scopes(): never {
      throw new TypeError('a bug in decoding');
    },
  };
  const logged: { level: string; message: string; fields: Readonly<Record<string, unknown>> | undefined }[] = [];
  const logger: Logger = { log: (level, message, fields) => logged.push({ level, message, fields }), child: () => logger };
  const metrics = new Registry();
  const hub = new WatchHub({
    store,
    clock: systemClock,
    metrics,
    logger,
    limits: WATCH_LIMITS_TEST,
    authenticate: (req) => (req.headers['x-test-broken'] === undefined ? { name: 'fine', id: 'f', scopes } : broken),
  });
  const server = createHttpServer((_req, res) => res.end());
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const bystander = await WatchClient.connect(url);
  const victim = await WatchClient.connect(url, undefined, { 'x-test-broken': '1' });
  try {
    assert.equal((await bystander.subscribe('all', [''])).type, 'subscribed');
    victim.send({ type: 'subscribe', id: 1, prefixes: ['a/'] });
    const closed = await victim.closed;
    assert.equal(closed.code, WatchCloseCode.INTERNAL_ERROR);
    assert.match(closed.reason, /internal error/);
    const errors = logged.filter((entry) => entry.level === 'error');
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]!.fields?.error), /a bug in decoding/);
    assert.match(metrics.render(), /^mercury_watch_refused_total\{code="INTERNAL"\} 1$/m);
    const entry = put('after/bug');
    hub.publish([entry]);
    await bystander.waitForSeq('all', entry.entry.seq);
  } finally {
    bystander.terminate();
    victim.terminate();
    await hub.close();
    await new Promise((resolve) => server.close(resolve));
    await store.close();
    removeDir(dir);
  }
});
