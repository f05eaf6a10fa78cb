/**
 * TypeScript client: watches that keep going. Checked against the node's log (GET /v1/log, through the oracle of
 * test/support/watch.ts): after the client's socket is cut, after the node is killed and restarted on another port
 * (failover to the second URL), every selected entry arrives exactly once and in order. A watch older than the
 * retained log gets the current state first, then the live stream. `break` closes the socket.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connect, type Watch, type WatchEvent } from '../src/index.js';
import { freePort, startTcpProxy } from './support/net.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { expectedEvents, readLog, type WatchEvent as JsonEvent } from './support/watch.js';

const FAST_RECONNECT = { watchReconnectDelayMsBase: 10, watchReconnectDelayMsMax: 50, retryDelayMsBase: 1, retryDelayMsMax: 20 } as const;

/** Takes events until `done` says so (or fails after `timeoutMs`), without closing the watch. */
async function takeUntil(watch: Watch, into: WatchEvent[], done: (events: WatchEvent[]) => boolean, timeoutMs = 8_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done(into)) {
    const left = deadline - performance.now();
    if (left <= 0) assert.fail(`watch: condition not met within ${timeoutMs} ms; last events: ${JSON.stringify(into.slice(-3))}`);
    let timer: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      watch.next(),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), left))),
    ]);
    clearTimeout(timer);
    if (next === 'timeout') continue;
    if (next.done) assert.fail('watch ended');
    into.push(next.value);
  }
}

const reached = (seq: number) => (events: WatchEvent[]): boolean => events.some((event) => event.seq >= seq && event.type !== 'snapshot');

function hex(text: string | null | undefined, encoding: string | null | undefined): string {
  return text === null || text === undefined ? '-' : Buffer.from(text, encoding === 'base64' ? 'base64' : 'utf8').toString('hex');
}

/** One line per change, for comparing what the watch delivered with what the log says it must. */
function lineOfJson(seq: number, event: JsonEvent): string {
  if (event.type === 'deleteRange') return `${seq} deleteRange ${hex(event.start, event.startEncoding)} ${hex(event.end, event.endEncoding)}`;
  return `${seq} ${event.type} ${hex(event.key, event.keyEncoding)} ${hex(event.value, event.valueEncoding)}`;
}

function lineOf(event: WatchEvent): string | undefined {
  const h = (bytes: Buffer | null | undefined): string => (bytes === null || bytes === undefined ? '-' : bytes.toString('hex'));
  switch (event.type) {
    case 'put':
      return `${event.seq} put ${h(event.key)} ${h(event.value)}`;
    case 'delete':
      return `${event.seq} delete ${h(event.key)} -`;
    case 'deleteRange':
      return `${event.seq} deleteRange ${h(event.start)} ${h(event.end)}`;
    default:
      return undefined;
  }
}

async function assertMatchesLog(baseUrl: string, events: readonly WatchEvent[], prefixes: readonly string[], fromSeq: number, label: string): Promise<void> {
  const log = await readLog(baseUrl, fromSeq);
  const expected = expectedEvents(log, { prefixes: prefixes.map((prefix) => Buffer.from(prefix)) }).flatMap((message) =>
    message.events.map((event) => lineOfJson(message.seq, event)),
  );
  const received = events.map(lineOf).filter((line): line is string => line !== undefined);
  assert.deepEqual(received, expected, `${label}: every selected change exactly once, in log order`);
}

async function watchConnections(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  return Number(/^mercury_watch_connections (\d+)/m.exec(text)?.[1] ?? NaN);
}

describe('client watch', () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const step of cleanup.reverse()) await step();
  });

  async function serve(label: string, args: readonly string[] = [], dir = makeTempDir(label)): Promise<ServeProcess> {
    const node = await startServe(dir, args);
    cleanup.push(() => stopProcess(node.child), () => removeDir(dir));
    return node;
  }

  test('client watch: cut connections are resumed with no missed and no repeated event', async () => {
    const node = await serve('client-watch-cut');
    const proxy = await startTcpProxy(node.url);
    cleanup.push(() => proxy.close());
    const writer = connect(node.url);
    const watch = connect(proxy.url, FAST_RECONNECT).watch({ prefix: 'w/', fromSeq: 1 });
    const events: WatchEvent[] = [];
    let last = 0;
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 5; i++) last = (await writer.put(`w/${round}/${i}`, `value ${round}.${i}`)).seq;
      await writer.put(`other/${round}`, 'not selected');
      if (round === 2) last = (await writer.delete('w/0/0')).seq;
      if (round === 3) last = (await writer.deletePrefix('w/1/')).seq;
      if (round % 2 === 1) proxy.cutAll(); // cut before reading: the events of this round are resumed, not lost
      await takeUntil(watch, events, reached(last));
      proxy.cutAll();
    }
    await watch.return();
    assert.ok(proxy.accepted() >= 4, `the watch reconnected (${proxy.accepted()} connections)`);
    await assertMatchesLog(node.url, events, ['w/'], 1, 'cut');
  });

  test('client watch: a node killed and restarted on another port is followed to the second URL', async () => {
    const [port1, port2] = [await freePort(), await freePort()];
    const dir = makeTempDir('client-watch-restart');
    cleanup.push(() => removeDir(dir));
    const urls = [`http://127.0.0.1:${port1}`, `http://127.0.0.1:${port2}`];
    let node = await startServe(dir, ['--listen', `127.0.0.1:${port1}`]);
    const client = connect(urls, FAST_RECONNECT);
    const watch = client.watch({ prefix: ['r/', 's/'], fromSeq: 1, progress: true });
    const events: WatchEvent[] = [];
    let last = 0;
    for (let i = 0; i < 6; i++) last = (await client.put(i % 2 === 0 ? `r/${i}` : `x/${i}`, `before ${i}`)).seq;
    await takeUntil(watch, events, reached(last));
    await stopProcess(node.child, 'SIGKILL');
    node = await startServe(dir, ['--listen', `127.0.0.1:${port2}`]);
    cleanup.push(() => stopProcess(node.child));
    for (let i = 0; i < 6; i++) last = (await client.put(i % 2 === 0 ? `s/${i}` : `r/after${i}`, `after ${i}`)).seq;
    await takeUntil(watch, events, reached(last), 15_000);
    await watch.return();
    assert.ok(events.some((event) => event.type === 'progress'), 'progress events are delivered when asked for');
    await assertMatchesLog(node.url, events, ['r/', 's/'], 1, 'restart');
  });

  test('client watch: when the replica it watches dies, the watch resumes on another replica', async () => {
    const root = await serve('client-watch-root');
    const first = await serve('client-watch-replica-1', ['--upstream', root.replication]);
    const second = await serve('client-watch-replica-2', ['--upstream', root.replication]);
    const writer = connect(root.url);
    const watch = connect([first.url, second.url], FAST_RECONNECT).watch({ prefix: 'f/', fromSeq: 1 });
    const events: WatchEvent[] = [];
    let last = 0;
    for (let i = 0; i < 8; i++) last = (await writer.put(i % 3 === 0 ? `g/${i}` : `f/${i}`, `before ${i}`)).seq;
    await takeUntil(watch, events, reached(last));
    await stopProcess(first.child, 'SIGKILL');
    for (let i = 0; i < 8; i++) last = (await writer.put(`f/after/${i}`, `after ${i}`)).seq;
    last = (await writer.deletePrefix('f/after/1')).seq;
    await takeUntil(watch, events, reached(last), 15_000);
    await watch.return();
    await assertMatchesLog(root.url, events, ['f/'], 1, 'replica failover');
  });

  test('client watch: from before the retained log, the current state first, then the live stream', async () => {
    const node = await serve('client-watch-snapshot', ['--log-retain-entries', '5']);
    const writer = connect(node.url);
    for (let i = 0; i < 20; i++) await writer.put(`snap/${String(i).padStart(2, '0')}`, `v${i}`);
    await writer.delete('snap/03');
    await writer.put('other/x', 'not selected');
    const deadline = performance.now() + 5_000;
    while (((await writer.status()).log?.firstSeq ?? 1) <= 1) {
      assert.ok(performance.now() < deadline, 'the node trims its log within 5 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const watch = connect(node.url, FAST_RECONNECT).watch({ prefix: 'snap/', fromSeq: 1 });
    const events: WatchEvent[] = [];
    await takeUntil(watch, events, (got) => got.some((event) => event.type === 'snapshotEnd'));
    assert.equal(events[0]?.type, 'snapshotBegin');
    const snapshotSeq = events[0].seq;
    const state = await writer.range('snap/').next();
    const items = events.filter((event) => event.type === 'snapshot');
    assert.deepEqual(
      items.map((item) => `${item.key.toString()}=${item.value?.toString()}`),
      state.value!.items.map((item) => `${item.key.toString()}=${item.value.toString()}`),
    );
    assert.ok(items.every((item) => item.seq === snapshotSeq));
    const live = (await writer.put('snap/new', 'live')).seq;
    const tail: WatchEvent[] = [];
    await takeUntil(watch, tail, reached(live));
    await watch.return();
    assert.deepEqual(tail.map(lineOf), [`${live} put ${Buffer.from('snap/new').toString('hex')} ${Buffer.from('live').toString('hex')}`]);
    await assertMatchesLog(node.url, tail, ['snap/'], snapshotSeq + 1, 'after the snapshot');
  });

  test('client watch: break closes the connection; a refused watch throws WatchError', async () => {
    const node = await serve('client-watch-close');
    const client = connect(node.url, FAST_RECONNECT);
    const watch = client.watch({ prefix: '', fromSeq: 1 });
    const put = client.put('any', 'thing');
    for await (const event of watch) {
      assert.equal(event.type, 'put');
      break;
    }
    await put;
    const deadline = performance.now() + 3_000;
    while ((await watchConnections(node.url)) !== 0) {
      assert.ok(performance.now() < deadline, 'the socket is closed after break');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const refused = client.watch({ prefix: 'p'.repeat(2000) });
    await assert.rejects(refused.next(), (error: Error & { code?: string }) => error.name === 'WatchError' && error.code === 'PREFIX_TOO_LARGE');
    assert.deepEqual(await refused.next(), { value: undefined, done: true });
  });
});
