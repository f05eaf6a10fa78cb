/**
 * Watches on a real node (port 0, temp dir): the stream each subscription receives is checked against the node's log
 * with an independent oracle (test/support/watch.ts): ordered, unique, no gaps, atomic per entry, in log order, for
 * several selections and filters at once; progress when idle; resume after a reconnect; deleteRange clipping.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../src/node/index.js';
import { WATCH_LIMITS_TEST } from '../src/watch/index.js';
import { request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { assertEventsMatchLog, expectedEvents, readLog, WatchClient, type Filters, type ServerMessage } from './support/watch.js';

const JSON_TYPE = { 'content-type': 'application/json' };

describe('watch stream', () => {
  let dir: string;
  let node: MercuryNode;
  let url: string;
  const clients: WatchClient[] = [];

  const connect = async (): Promise<WatchClient> => {
    const client = await WatchClient.connect(url);
    clients.push(client);
    return client;
  };
  const put = async (key: string, value: string | Buffer): Promise<number> => {
    const response = await request(url, 'PUT', `/v1/kv/${key}`, { body: value });
    assert.equal(response.status, 200, response.body.toString());
    return (JSON.parse(response.body.toString()) as { seq: number }).seq;
  };
  const txn = async (body: unknown): Promise<number> => (await requestJson<{ seq: number }>(url, 'POST', '/v1/txn', { body: JSON.stringify(body), headers: JSON_TYPE })).seq;
  const headSeq = async (): Promise<number> => (await requestJson<{ seq: number }>(url, 'GET', '/v1/status')).seq;

  before(async () => {
    dir = makeTempDir('watch-stream');
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST }) });
    url = node.url;
  });

  after(async () => {
    for (const client of clients) client.terminate();
    await node.close();
    removeDir(dir);
  });

  test('watch: every subscription gets exactly the log entries it selects, atomic per entry, in order, without gaps', async () => {
    const startSeq = (await headSeq()) + 1;
    const selections: { id: string; prefixes: string[]; filters?: Filters }[] = [
      { id: 'a+c', prefixes: ['a/', 'c/'] },
      { id: 'all', prefixes: [''] },
      { id: 'a-keys', prefixes: ['a/'], filters: { keysOnly: true } },
      { id: 'b-puts', prefixes: ['b/'], filters: { puts: true, deletes: false } },
      { id: 'ab-deletes', prefixes: ['a/', 'b/'], filters: { puts: false } },
      { id: 'nested', prefixes: ['a/', 'a/x/', 'a/'] },
      { id: 'binary', prefixes: ['bin/'] },
    ];
    // Two connections carry the same selections: equal selections share encoding, and must still each get all of it.
    const first = await connect();
    const second = await connect();
    for (const client of [first, second])
      for (const selection of selections) {
        const answer = await client.subscribe(selection.id, selection.prefixes, selection.filters === undefined ? {} : { filters: selection.filters });
        assert.deepEqual(answer, { type: 'subscribed', id: selection.id, fromSeq: startSeq });
      }

    // A mixed workload from 8 concurrent writers: puts, deletes, multi-op transactions across prefixes, range deletes,
    // binary keys and values, and values large enough to be sent as shared fragments (over 1 KiB in the test limits).
    let next = 0;
    const operations = 160;
    const writer = async (): Promise<void> => {
      while (next < operations) {
        const i = next++;
        const prefix = ['a/', 'b/', 'c/', 'd/', 'a/x/'][i % 5]!;
        switch (i % 8) {
          case 0:
          case 1:
          case 2:
            await put(`${prefix}k${i % 13}`, i % 16 === 0 ? 'v'.repeat(3000) : `value ${i}`);
            break;
          case 3:
            await request(url, 'DELETE', `/v1/kv/${prefix}k${(i + 3) % 13}`);
            break;
          case 4:
            await txn({
              success: [
                { op: 'put', key: `a/t${i}`, value: `t${i}` },
                { op: 'put', key: `b/t${i}`, value: 'x'.repeat(1500) },
                { op: 'delete', key: `c/k${i % 13}` },
                { op: 'put', key: `d/t${i}`, value: 'outside every prefix but all' },
                { op: 'put', key: `a/t${i}`, value: 'second put of the same key in one entry' },
              ],
            });
            break;
          case 5:
            await txn({
              success: [
                { op: 'put', keyBase64: Buffer.from([0x62, 0x69, 0x6e, 0x2f, 0xff, i & 0xff]).toString('base64'), valueBase64: Buffer.from([0, 0xfe, i & 0xff]).toString('base64') },
                // Valid UTF-8, but with a control character (sent as base64) and with a newline (sent as text).
                { op: 'put', key: `bin/ctl${i % 3}`, value: `bell\u0007 ${i}` },
                { op: 'put', key: `bin/nl${i % 3}`, value: `line\nbreak ${i}` },
              ],
            });
            break;
          case 6:
            await txn({ success: [{ op: 'deleteRange', start: `a/k${i % 7}`, end: `c/k${i % 5}` }] });
            break;
          case 7:
            await request(url, 'DELETE', `/v1/kv?prefix=${encodeURIComponent(`${prefix}k1`)}`);
            break;
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, writer));
    const head = await headSeq();
    for (const client of [first, second]) for (const { id } of selections) await client.waitForSeq(id, head);

    const log = await readLog(url, startSeq);
    assert.equal(log[log.length - 1]!.seq, head);
    for (const selection of selections) {
      const expected = expectedEvents(log, { prefixes: selection.prefixes.map((prefix) => Buffer.from(prefix)), ...(selection.filters === undefined ? {} : { filters: selection.filters }) });
      assert.ok(expected.length > 0, `${selection.id}: the workload touches the selection`);
      for (const [name, client] of [['first', first], ['second', second]] as const) assertEventsMatchLog(client.eventsOf(selection.id), expected, `${name} ${selection.id}`);
    }
    // Atomic per entry: a five-op transaction arrives as one message holding all its selected events.
    const multi = first.eventsOf('all').filter((message) => message.events.length === 5);
    assert.ok(multi.length > 0, 'transactions arrive whole');

    // A subscription that starts at the first seq of the workload is served from the log and gets the same stream.
    const late = await connect();
    await late.subscribe('all', [''], { fromSeq: startSeq });
    await late.waitForSeq('all', head);
    assertEventsMatchLog(late.eventsOf('all'), expectedEvents(log, { prefixes: [Buffer.alloc(0)] }), 'catch-up all');
    const metrics = node.metrics.render();
    assert.match(metrics, /^mercury_watch_subscriptions 15$/m);
    assert.match(metrics, /^mercury_watch_catchups_total [1-9]/m);
    assert.match(metrics, /^mercury_watch_events_sent_total [1-9]/m);
  });

  test('watch: an idle subscription gets progress with the applied seq, and heartbeats when nothing changes', async () => {
    const client = await connect();
    await client.subscribe('idle', ['never/']);
    const seq = await put('elsewhere/key', 'value');
    await client.waitFor((message) => message.type === 'progress' && message.id === 'idle' && message.seq === seq, 2_000);
    const count = client.of('idle').filter((message) => message.type === 'progress').length;
    // Nothing is written now: heartbeats (every 200 ms in the test limits) still name the same seq. Wait for one more
    // progress message than already seen, rather than for a fixed time.
    const seen = client.messages.length;
    await client.waitFor((message) => message.type === 'progress' && message.id === 'idle', 2_000, seen);
    const progress = client.of('idle').filter((message) => message.type === 'progress');
    assert.ok(progress.length >= count + 1, `heartbeat progress while idle (${progress.length} after ${count})`);
    assert.ok(progress.every((message) => message.type === 'progress' && message.seq <= seq));
    assert.equal(client.eventsOf('idle').length, 0);
  });

  test('watch: a client that reconnects with fromSeq = last seq + 1 gets exactly the rest', async () => {
    const client = await connect();
    await client.subscribe(1, ['resume/']);
    for (let i = 0; i < 10; i++) await put(`resume/k${i % 4}`, `before ${i}`);
    const before = await headSeq();
    await client.waitForSeq(1, before);
    // The last seq the client knows it has everything up to: from events or progress, whichever is later.
    const last = Math.max(...client.of(1).map((message) => ('seq' in message ? message.seq : 0)));
    client.terminate();
    for (let i = 0; i < 10; i++) await put(`resume/k${i % 4}`, `while away ${i}`);
    await txn({ success: [{ op: 'deletePrefix', prefix: 'resume/k1' }, { op: 'put', key: 'resume/k9', value: 'nine' }] });
    const resumed = await connect();
    assert.deepEqual(await resumed.subscribe(1, ['resume/'], { fromSeq: last + 1 }), { type: 'subscribed', id: 1, fromSeq: last + 1 });
    for (let i = 0; i < 5; i++) await put(`resume/k${i}`, `after ${i}`);
    const head = await headSeq();
    await resumed.waitForSeq(1, head);
    const selection = { prefixes: [Buffer.from('resume/')] };
    const log = await readLog(url, 1);
    assertEventsMatchLog(client.eventsOf(1), expectedEvents(log.filter((entry) => entry.seq <= last), selection), 'before the reconnect');
    assertEventsMatchLog(resumed.eventsOf(1), expectedEvents(log.filter((entry) => entry.seq > last), selection), 'after the reconnect');
  });

  test('watch: a range delete is one event per watched prefix, clipped to it', async () => {
    const client = await connect();
    await client.subscribe('a', ['rng/a/']);
    await client.subscribe('b', ['rng/b/']);
    await client.subscribe('both', ['rng/b/', 'rng/a/']);
    await client.subscribe('all', ['']);
    const seq = await txn({ success: [{ op: 'deleteRange', start: 'rng/a/3', end: 'rng/b/5' }] });
    for (const id of ['a', 'b', 'both', 'all']) await client.waitForSeq(id, seq);
    const a = { type: 'deleteRange', start: 'rng/a/3', startEncoding: 'utf8', end: 'rng/a0', endEncoding: 'utf8', modSeq: seq };
    const b = { type: 'deleteRange', start: 'rng/b/', startEncoding: 'utf8', end: 'rng/b/5', endEncoding: 'utf8', modSeq: seq };
    assert.deepEqual(client.eventsOf('a').map((message) => message.events), [[a]]);
    assert.deepEqual(client.eventsOf('b').map((message) => message.events), [[b]]);
    assert.deepEqual(client.eventsOf('both').map((message) => message.events), [[a, b]]);
    assert.deepEqual(client.eventsOf('all').map((message) => message.events), [[{ ...a, end: 'rng/b/5' }]]);
    // An unbounded range under the empty prefix has a null end.
    const open = await txn({ success: [{ op: 'deleteRange', start: 'zzzz/' }] });
    await client.waitForSeq('all', open);
    assert.deepEqual(client.eventsOf('all').at(-1)?.events, [{ type: 'deleteRange', start: 'zzzz/', startEncoding: 'utf8', end: null, endEncoding: null, modSeq: open }]);
  });

  test('watch: unsubscribe stops a subscription and frees its id; the others go on', async () => {
    const client = await connect();
    await client.subscribe('x', ['unsub/']);
    await client.subscribe('y', ['unsub/']);
    const seq = await put('unsub/k', 'one');
    await client.waitForSeq('x', seq);
    client.send({ type: 'unsubscribe', id: 'x' });
    await client.waitFor((message) => message.type === 'unsubscribed' && message.id === 'x');
    const second = await put('unsub/k', 'two');
    await client.waitForSeq('y', second);
    assert.deepEqual(client.eventsOf('x').map((message) => message.seq), [seq]);
    assert.deepEqual(client.eventsOf('y').map((message) => message.seq), [seq, second]);
    // The id can be used again.
    assert.equal((await client.subscribe('x', ['unsub/'])).type, 'subscribed');
  });

  test('watch: on the root, a fromSeq past the head gets a snapshot at the head (a reset), then the stream from there', async () => {
    const before = await put('future/k', 'v');
    const head = await headSeq();
    const client = await connect();
    // Only a client that followed another chain (a root restored from a backup since) can be past the root's head.
    await client.subscribe('future', ['future/'], { fromSeq: head + 3 });
    const done = await client.waitFor((message) => message.type === 'snapshot' && message.id === 'future' && message.done);
    const pages = client.of('future').filter((message): message is Extract<ServerMessage, { type: 'snapshot' }> => message.type === 'snapshot');
    assert.equal(pages[0]!.begin, true);
    assert.ok('seq' in done && done.seq >= head, 'the snapshot is at the head');
    assert.deepEqual(pages.flatMap((page) => page.items.map((item) => [item.key, item.modSeq])), [['future/k', before]]);
    const seqs: number[] = [];
    for (let i = 0; i < 2; i++) seqs.push(await put('future/k', `v${i}`));
    await client.waitForSeq('future', seqs[1]!);
    assert.deepEqual(client.eventsOf('future').map((message) => message.seq), seqs);
  });
});
