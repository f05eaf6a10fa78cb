/**
 * Slow watchers: a client that stops reading (its socket paused) fills its queue, leaves the live fan-out for
 * catch-up from the log, and once its queue has not shrunk for the stall time is closed with 4008 and a resume seq;
 * meanwhile a fast client of the same selection on the same node keeps getting every entry promptly. A client that
 * pauses for less than the stall time catches up from the log and rejoins the live stream without a gap.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../src/node/index.js';
import { WATCH_LIMITS_TEST } from '../src/watch/index.js';
import { WatchCloseCode } from '../src/api/index.js';
import { request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { assertEventsMatchLog, expectedEvents, readLog, WatchClient } from './support/watch.js';

const BIG_VALUE = 'b'.repeat(256 * 1024);
/**
 * The test preset's stall time (1 s) is shorter than filling a paused client's queue can take on a loaded machine, and
 * the pause test needs that filling to end well within the stall time: 3 s leaves room, and costs the stall test 2 s.
 */
const STALL_MS = 3_000;

describe('watch slow watchers', () => {
  let dir: string;
  let node: MercuryNode;
  let url: string;
  const clients: WatchClient[] = [];

  const connect = async (): Promise<WatchClient> => {
    const client = await WatchClient.connect(url);
    clients.push(client);
    return client;
  };
  const put = async (key: string, value: string): Promise<number> => {
    const response = await request(url, 'PUT', `/v1/kv/${key}`, { body: value });
    assert.equal(response.status, 200, response.body.toString());
    return (JSON.parse(response.body.toString()) as { seq: number }).seq;
  };
  const metric = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(node.metrics.render())?.[1] ?? 0);
  const headSeq = async (): Promise<number> => (await requestJson<{ seq: number }>(url, 'GET', '/v1/status')).seq;

  before(async () => {
    dir = makeTempDir('watch-slow');
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: withLimits(NODE_LIMITS, { watch: { ...WATCH_LIMITS_TEST, stallMs: STALL_MS, peerSilentMs: 2 * STALL_MS } }) });
    url = node.url;
  });

  after(async () => {
    for (const client of clients) client.terminate();
    await node.close();
    removeDir(dir);
  });

  test('watch: a client that stops reading is closed with 4008 and a resume seq, while a fast one keeps up', async () => {
    const fast = await connect();
    const slow = await connect();
    const startSeq = (await headSeq()) + 1;
    await fast.subscribe('big', ['big/']);
    await fast.subscribe('small', ['small/']);
    await slow.subscribe('big', ['big/']);
    slow.socket.pause();
    const closesBefore = metric('mercury_watch_slow_closes_total');
    const catchupsBefore = metric('mercury_watch_catchups_total');

    // Write large values until the slow client's queue (after the kernel's socket buffers) is full and it has left
    // the live fan-out; after each, a small change whose delivery time to the fast client is measured.
    const latenciesMs: number[] = [];
    const writeRound = async (i: number): Promise<void> => {
      await put(`big/k${i % 10}`, BIG_VALUE);
      const started = performance.now();
      const seq = await put('small/k', `${i}`);
      await fast.waitFor((message) => message.type === 'events' && message.id === 'small' && message.seq === seq, 2_000);
      latenciesMs.push(performance.now() - started);
    };
    let round = 0;
    while (metric('mercury_watch_catchups_total') === catchupsBefore) {
      assert.ok(round < 400, 'the paused client never left the live fan-out');
      await writeRound(round++);
    }
    // Keep writing while the stall timer runs out.
    const deadline = performance.now() + STALL_MS + 4_000;
    while (metric('mercury_watch_slow_closes_total') === closesBefore) {
      assert.ok(performance.now() < deadline, `the stalled client was not closed within ${STALL_MS + 4_000} ms`);
      await writeRound(round++);
    }
    const head = await headSeq();
    await fast.waitForSeq('big', head);
    latenciesMs.sort((x, y) => x - y);
    const p99 = latenciesMs[Math.floor(latenciesMs.length * 0.99)]!;
    assert.ok(p99 < 500, `a fast watcher waited ${p99.toFixed(1)} ms (p99 of ${latenciesMs.length}) beside a slow one`);

    // The slow client reads again: everything queued before the close arrives, then the close code and reason.
    slow.socket.resume();
    const closed = await slow.closed;
    assert.equal(closed.code, WatchCloseCode.SLOW_WATCHER);
    const match = /^slow watcher: resume from seq (\d+)$/.exec(closed.reason);
    assert.ok(match !== null, closed.reason);
    const resumeSeq = Number(match[1]);
    const lastProgress = slow.of('big').at(-1)!;
    const resumeHash = (await readLog(url, resumeSeq - 1))[0]!.hash;
    assert.deepEqual(lastProgress, { type: 'progress', id: 'big', seq: resumeSeq - 1, hash: resumeHash }, 'a progress message, with the hash to resume after, precedes the close');
    assert.ok(resumeSeq <= head);

    // What it got is an exact prefix of the stream, and resuming from the seq in the reason gets exactly the rest.
    const log = await readLog(url, startSeq);
    const selection = { prefixes: [Buffer.from('big/')] };
    assertEventsMatchLog(slow.eventsOf('big'), expectedEvents(log.filter((entry) => entry.seq < resumeSeq), selection), 'slow, before the close');
    const resumed = await connect();
    await resumed.subscribe('big', ['big/'], { fromSeq: resumeSeq });
    await resumed.waitForSeq('big', head, 10_000);
    assertEventsMatchLog(resumed.eventsOf('big'), expectedEvents(log.filter((entry) => entry.seq >= resumeSeq), selection), 'slow, resumed');
    assertEventsMatchLog(fast.eventsOf('big'), expectedEvents(log, selection), 'fast big');
    assertEventsMatchLog(fast.eventsOf('small'), expectedEvents(log, { prefixes: [Buffer.from('small/')] }), 'fast small');
  });

  test('watch: a client that pauses for less than the stall time catches up from the log and rejoins live', async () => {
    const client = await connect();
    const startSeq = (await headSeq()) + 1;
    await client.subscribe('p', ['pause/']);
    const catchupsBefore = metric('mercury_watch_catchups_total');
    client.socket.pause();
    const pausedAt = performance.now();
    let i = 0;
    while (metric('mercury_watch_catchups_total') === catchupsBefore) {
      assert.ok(i < 400, 'the paused client never left the live fan-out');
      await put(`pause/k${i++ % 5}`, BIG_VALUE);
    }
    // Resume well within the stall time: the queue drains, so the connection is not closed.
    assert.ok(performance.now() - pausedAt < 0.9 * STALL_MS, 'writing took too long for this test to mean anything');
    client.socket.resume();
    for (let j = 0; j < 5; j++) await put(`pause/k${j}`, 'small again');
    const head = await headSeq();
    await client.waitForSeq('p', head, 10_000);
    assertEventsMatchLog(client.eventsOf('p'), expectedEvents(await readLog(url, startSeq), { prefixes: [Buffer.from('pause/')] }), 'paused');
    assert.equal(client.socket.readyState, client.socket.OPEN);
    assert.equal(metric('mercury_watch_subscriptions_lagging'), 0, 'every subscription is live again');
  });
});
