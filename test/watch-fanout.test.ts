/**
 * The live fan-out's shortcuts keep the protocol exact: a frame the machine builds once and the hub writes straight on
 * many TCP sockets is byte for byte what `ws.send` would have sent; `publish` hands the fan-out to the check phase of
 * the event loop (a write's acknowledgement does not wait behind thousands of socket writes) yet a revocation in the
 * same turn still comes after the entries applied before it; and scope checks keep watchers of different scopes out
 * of each other's shared frames.
 */
import assert from 'node:assert/strict';
import { connect as connectTcp, type AddressInfo } from 'node:net';
import { test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { eventsBody, eventsHead, progressMessage, WatchCloseCode } from '../src/api/index.js';
import type { Principal } from '../src/auth/index.js';
import { systemClock } from '../src/clock/index.js';
import type { EncodedEntry } from '../src/log/index.js';
import { silentLogger } from '../src/logging/index.js';
import { Registry } from '../src/metrics/index.js';
import { createHttpServer } from '../src/server/index.js';
import { Store } from '../src/store/index.js';
import { textFrame } from '../src/watch/frame.js';
import { WATCH_LIMITS_TEST, WatchHub } from '../src/watch/index.js';
import { makeTempDir, removeDir } from './support/process.js';
import { WatchClient } from './support/watch.js';

/** The raw bytes a client receives until it holds `bytes` of them. */
function readBytes(socket: import('node:net').Socket, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= bytes) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

test('watch fan-out: a pre-built frame is byte for byte what ws.send sends, for 7-, 16- and 64-bit payload lengths', async () => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const accepted = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
  // A bare TCP client: it sees the frames exactly as they come off the wire.
  const raw = connectTcp({ port: (server.address() as AddressInfo).port, host: '127.0.0.1' });
  try {
    raw.write('GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n');
    const handshake = await readBytes(raw, 1);
    assert.match(handshake.toString('latin1'), /^HTTP\/1\.1 101/);
    const socket = await accepted;
    const texts = [
      progressMessage('1', 12, 'ab'.repeat(32)),
      eventsHead('"ü-id"') + eventsBody(7, 1_700_000_000_000, 'cd'.repeat(32), ['{"type":"put","key":"cfg/ä","keyEncoding":"utf8","value":"v","valueEncoding":"utf8","modSeq":7}']),
      'm'.repeat(300),
      '€'.repeat(30_000), // 90,000 bytes of UTF-8: a 64-bit length
    ];
    for (const text of texts) {
      const expected = textFrame(Buffer.from(text, 'utf8'));
      const arriving = readBytes(raw, expected.length);
      socket.send(text);
      const sent = await arriving;
      assert.equal(sent.length, expected.length, `the frame of a ${Buffer.byteLength(text)}-byte message`);
      assert.ok(sent.equals(expected), `ws.send and textFrame differ for a ${Buffer.byteLength(text)}-byte message`);
    }
  } finally {
    raw.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** A hub on a bare HTTP server over a Store (as in watch-publish.test.ts), with principals named by a test header. */
async function startHub(principals: ReadonlyMap<string, Principal> = new Map()) {
  const dir = makeTempDir('watch-fanout');
  const store = Store.open({ path: dir });
  const metrics = new Registry();
  const hub = new WatchHub({
    store,
    clock: systemClock,
    metrics,
    logger: silentLogger,
    limits: WATCH_LIMITS_TEST,
    authenticate: principals.size === 0 ? undefined : (req) => principals.get(String(req.headers['x-test-principal'])),
  });
  const server = createHttpServer((_req, res) => res.end());
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const put = (key: string): EncodedEntry =>
    store.commit(systemClock.nowMs(), (view) => view.apply({ type: 'put', key: Buffer.from(key), value: Buffer.from('v') }))!;
  const eventsSent = (): number => Number(/^mercury_watch_events_sent_total (\d+)$/m.exec(metrics.render())?.[1] ?? 0);
  const stop = async (): Promise<void> => {
    await hub.close();
    await new Promise((resolve) => server.close(resolve));
    await store.close();
    removeDir(dir);
  };
  return { hub, url, put, eventsSent, stop };
}

test('watch fan-out: publish returns before any watcher is written to, and the fan-out follows within the same event-loop turn', async () => {
  const { hub, url, put, eventsSent, stop } = await startHub();
  const client = await WatchClient.connect(url);
  try {
    await client.subscribe('a', ['a/']);
    const entry = put('a/1');
    hub.publish([entry]);
    // The committer resolves its writes before it publishes: their acknowledgements are written in these microtasks.
    await Promise.resolve();
    assert.equal(eventsSent(), 0, 'the fan-out waited for the microtasks of the publisher');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(eventsSent(), 1, 'the fan-out ran on the check phase of the same turn');
    await client.waitForSeq('a', entry.entry.seq);
  } finally {
    client.terminate();
    await stop();
  }
});

test('watch fan-out: a revocation in the same turn as a publish closes the watch after the entries applied before it', async () => {
  const scopes = { read: [Buffer.from('a/')], write: [], admin: false, replicate: false };
  const principals = new Map<string, Principal>([
    ['revoked', { name: 'revoked', id: 'tok-revoked', scopes }],
    ['kept', { name: 'kept', id: 'tok-kept', scopes }],
  ]);
  const { hub, url, put, stop } = await startHub(principals);
  const revoked = await WatchClient.connect(url, undefined, { 'x-test-principal': 'revoked' });
  const kept = await WatchClient.connect(url, undefined, { 'x-test-principal': 'kept' });
  try {
    await revoked.subscribe(1, ['a/']);
    await kept.subscribe(1, ['a/']);
    const entry = put('a/1');
    hub.publish([entry]);
    hub.revoke(['tok-revoked']);
    const closed = await revoked.closed;
    assert.equal(closed.code, WatchCloseCode.CREDENTIAL_REVOKED);
    assert.deepEqual(
      revoked.eventsOf(1).map((message) => message.seq),
      [entry.entry.seq],
      'the entry applied before the revocation reached the watch before its close',
    );
    await kept.waitForSeq(1, entry.entry.seq);
    const later = put('a/2');
    hub.publish([later]);
    await kept.waitForSeq(1, later.entry.seq);
  } finally {
    revoked.terminate();
    kept.terminate();
    await stop();
  }
});

test('watch fan-out: watchers of different read scopes share frames only within their own selection', async () => {
  const principals = new Map<string, Principal>([
    ['team', { name: 'team', id: 'tok-team', scopes: { read: [Buffer.from('cfg/team1/')], write: [], admin: false, replicate: false } }],
    ['all', { name: 'all', id: 'tok-all', scopes: { read: [Buffer.from('cfg/')], write: [], admin: false, replicate: false } }],
  ]);
  const { hub, url, put, stop } = await startHub(principals);
  const teams = await Promise.all([1, 2, 3].map(() => WatchClient.connect(url, undefined, { 'x-test-principal': 'team' })));
  const wide = await Promise.all([1, 2, 3].map(() => WatchClient.connect(url, undefined, { 'x-test-principal': 'all' })));
  try {
    // The team token may not widen its watch to the shared prefix, whatever the others watch.
    const refused = await teams[0]!.subscribe(2, ['cfg/']);
    assert.equal(refused.type, 'error');
    assert.equal((refused as { code: string }).code, 'PERMISSION_DENIED');
    for (const client of teams) assert.equal((await client.subscribe(1, ['cfg/team1/'])).type, 'subscribed');
    for (const client of wide) assert.equal((await client.subscribe(1, ['cfg/'])).type, 'subscribed');
    const outside = put('cfg/other');
    const inside = put('cfg/team1/flag');
    hub.publish([outside, inside]);
    for (const client of wide) await client.waitForSeq(1, inside.entry.seq);
    for (const client of teams) await client.waitForSeq(1, inside.entry.seq);
    for (const client of wide)
      assert.deepEqual(
        client.eventsOf(1).map((message) => message.seq),
        [outside.entry.seq, inside.entry.seq],
      );
    for (const client of teams)
      assert.deepEqual(
        client.eventsOf(1).flatMap((message) => message.events.map((event) => event.key)),
        ['cfg/team1/flag'],
        'a team watcher never receives the shared prefix frame',
      );
  } finally {
    for (const client of [...teams, ...wide]) client.terminate();
    await stop();
  }
});
