/**
 * The prefix bytes that one remote address's watch subscriptions hold over all its connections, against a real node
 * with the production limits: the per-connection budget alone let one address open thousands of connections of 32 KiB
 * of prefixes each (some 720 MB of node memory at the default 4,000 connections per address).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { validateConfig, withConfigLimits } from '../src/config/index.js';
import { KEY_BYTES_MAX } from '../src/limits.js';
import { WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION } from '../src/api/index.js';
import { MercuryNode, NODE_LIMITS } from '../src/node/index.js';
import { WATCH_LIMITS } from '../src/watch/index.js';
import { makeTempDir, removeDir } from './support/process.js';
import { WatchClient } from './support/watch.js';

/** One subscription of the most and longest prefixes: the `tag`s keep every prefix distinct. */
const maximal = (tag: string): string[] => Array.from({ length: WATCH_LIMITS.prefixesPerSubscriptionMax }, (_, i) => `${tag}/${i}/`.padEnd(KEY_BYTES_MAX, 'x'));
const SUBSCRIPTION_BYTES = WATCH_LIMITS.prefixesPerSubscriptionMax * KEY_BYTES_MAX;
const PER_CONNECTION = WATCH_LIMITS.prefixBytesPerConnectionMax / SUBSCRIPTION_BYTES;

describe('watch prefix budgets', () => {
  const dirs: string[] = [];
  const nodes: MercuryNode[] = [];
  const clients: WatchClient[] = [];

  const start = async (connectionsPerAddressMax?: number): Promise<MercuryNode> => {
    const dir = makeTempDir('watch-budget');
    dirs.push(dir);
    const node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0, connectionsPerAddressMax }), { auth: 'off' });
    nodes.push(node);
    return node;
  };
  /** A connection holding `subscriptions` maximal subscriptions (all accepted). */
  const fill = async (node: MercuryNode, tag: string, subscriptions: number): Promise<WatchClient> => {
    const client = await WatchClient.connect(node.url);
    clients.push(client);
    for (let n = 0; n < subscriptions; n++) assert.equal((await client.subscribe(n, maximal(`${tag}/${n}`))).type, 'subscribed', `${tag} subscription ${n}`);
    return client;
  };
  const refusal = async (client: WatchClient, id: string, prefixes: string[]): Promise<string> => {
    const answer = await client.subscribe(id, prefixes);
    assert.equal(answer.type, 'error', JSON.stringify(answer).slice(0, 200));
    const { code, message } = answer as { code: string; message: string };
    assert.equal(code, 'TOO_MANY_PREFIXES');
    return message;
  };

  before(() => {
    assert.ok(Number.isInteger(PER_CONNECTION) && PER_CONNECTION >= 1, 'a connection budget is whole subscriptions');
  });

  after(async () => {
    for (const client of clients) client.socket.terminate();
    for (const node of nodes) await node.close();
    for (const dir of dirs) removeDir(dir);
  });

  test('watch: one address holds at most its budget of prefix bytes over all its connections; closing one gives its bytes back', async () => {
    const node = await start();
    const perAddress = WATCH_LIMITS.prefixBytesPerAddressMax;
    const fullConnections = perAddress / WATCH_LIMITS.prefixBytesPerConnectionMax;
    assert.equal(fullConnections, 125, '4,000 KiB for an address, 32 KiB a connection');
    const full: WatchClient[] = [];
    for (let c = 0; c < fullConnections; c++) full.push(await fill(node, `c${c}`, PER_CONNECTION));
    // The address is full: its next connection, empty, is refused even two bytes, and says what to do.
    const next = await fill(node, 'next', 0);
    const message = await refusal(next, 'small', ['x/']);
    assert.match(message, new RegExp(`subscriptions of your address \\(127\\.0\\.0\\.1\\) hold ${perAddress} over ${fullConnections + 1} connections; one address holds at most ${perAddress} bytes of prefixes`));
    assert.match(message, /--max-connections-per-address/);
    // The connections that were accepted still get their changes.
    const seq = (await (await fetch(`${node.url}/v1/kv/${encodeURIComponent(maximal('c5/1')[3]!)}`, { method: 'PUT', body: 'v' })).json()) as { seq: number };
    await full[5]!.waitForSeq(1, seq.seq);
    // The operator sees what the watches hold.
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    assert.equal(Number(/^mercury_watch_prefix_bytes (\d+)$/m.exec(metrics)?.[1]), perAddress);
    // A connection that closes gives its bytes back.
    full[0]!.socket.close();
    await full[0]!.closed;
    const deadline = Date.now() + 5_000;
    let answer = await next.subscribe('small 2', ['x/']);
    while (answer.type === 'error' && Date.now() < deadline) answer = await next.subscribe(`small ${Date.now()}`, ['x/']);
    assert.equal(answer.type, 'subscribed');
  });

  test('watch: --max-connections-per-address scales what an address may hold of prefixes, never below one full connection', async () => {
    const scaled = (perAddress: number): number => withConfigLimits(validateConfig({ dataDir: '/unused', connectionsPerAddressMax: perAddress }), NODE_LIMITS).watch.prefixBytesPerAddressMax;
    assert.equal(scaled(8_000), 8_000 * WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION);
    assert.equal(scaled(8), WATCH_LIMITS.prefixBytesPerConnectionMax);
    // Through a real node: 8 connections allowed, so one full connection's worth for the address.
    const node = await start(8);
    await fill(node, 'first', PER_CONNECTION);
    const second = await fill(node, 'second', 0);
    assert.match(await refusal(second, 'small', ['x/']), new RegExp(`one address holds at most ${WATCH_LIMITS.prefixBytesPerConnectionMax} bytes of prefixes`));
  });

  test('watch: subscriptions of the empty prefix count at least subscriptionBytesMin each against the budgets; one per allowed connection still fits', async () => {
    const floor = WATCH_LIMITS.subscriptionBytesMin;
    const most = WATCH_LIMITS.subscriptionsPerConnectionMax;
    // 8 connections allowed: the address may hold one full connection's worth (32 KiB), 128 subscriptions at the floor.
    const node = await start(8);
    const perAddress = WATCH_LIMITS.prefixBytesPerConnectionMax;
    assert.equal(perAddress / floor, 2 * most, 'two connections of the most subscriptions fill the address');
    // The watcher's use: one subscription per connection, the empty prefix, on every connection the address may open.
    const watchers: WatchClient[] = [];
    for (let c = 0; c < 8; c++) {
      const client = await WatchClient.connect(node.url);
      clients.push(client);
      watchers.push(client);
      assert.equal((await client.subscribe('all', [''])).type, 'subscribed', `watcher ${c}`);
    }
    for (const client of watchers) client.socket.close();
    await Promise.all(watchers.map((client) => client.closed));
    // The attack: connections of 64 subscriptions of the empty prefix each. Before, none counted a byte (about 315 bytes
    // of the node's memory each, 20 KB a connection), and every connection's were taken.
    const empties = async (tag: string, subscriptions: number): Promise<WatchClient> => {
      const client = await WatchClient.connect(node.url);
      clients.push(client);
      for (let n = 0; n < subscriptions; n++) assert.equal((await client.subscribe(`${tag}${n}`, [''])).type, 'subscribed', `${tag} subscription ${n}`);
      return client;
    };
    // The watchers' bytes are given back once their close is handled: wait for the budget to be whole again.
    const deadline = Date.now() + 5_000;
    const first = await empties('a', 0);
    let answer = await first.subscribe('a0', ['']);
    while (answer.type === 'error' && Date.now() < deadline) answer = await first.subscribe(`a0 ${Date.now()}`, ['']);
    assert.equal(answer.type, 'subscribed');
    for (let n = 1; n < most; n++) assert.equal((await first.subscribe(`a${n}`, [''])).type, 'subscribed', `a${n}`);
    await empties('b', most);
    const third = await empties('c', 0);
    const message = await refusal(third, 'c0', ['']);
    assert.match(message, new RegExp(`this subscription counts ${floor} bytes \\(its prefixes, at least ${floor}\\)`));
    assert.match(message, new RegExp(`hold ${perAddress} over 3 connections; one address holds at most ${perAddress} bytes of prefixes`));
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    assert.equal(Number(/^mercury_watch_prefix_bytes (\d+)$/m.exec(metrics)?.[1]), perAddress, 'the gauge shows what the subscriptions count');
  });
});
