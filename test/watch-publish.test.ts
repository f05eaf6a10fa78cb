/**
 * The hub's contract with whoever feeds it (the root's committer, a replica's apply loop): entries published in order
 * are streamed, entries published twice are ignored, and a gap (a replica that installed a snapshot, so the entries in
 * between were never applied one by one and are not in its log) turns into a snapshot for the subscriptions that
 * were behind it, never into a silent hole. The hub runs here on a bare HTTP server over a Store, as a replica would.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { systemClock } from '../src/clock/index.js';
import type { EncodedEntry } from '../src/log/index.js';
import { silentLogger } from '../src/logging/index.js';
import { Registry } from '../src/metrics/index.js';
import { createHttpServer } from '../src/server/index.js';
import { Store } from '../src/store/index.js';
import { WATCH_LIMITS_TEST, WatchHub } from '../src/watch/index.js';
import { makeTempDir, removeDir } from './support/process.js';
import { WatchClient, type ServerMessage } from './support/watch.js';

test('watch: the hub streams published entries, ignores repeats, and answers a gap with a snapshot', async () => {
  const dir = makeTempDir('watch-publish');
  const store = Store.open({ path: dir });
  const put = (key: string, value: string): EncodedEntry =>
    store.commit(systemClock.nowMs(), (view) => view.apply({ type: 'put', key: Buffer.from(key), value: Buffer.from(value) }))!;
  for (let i = 1; i <= 3; i++) put(`g/k${i}`, `v${i}`);
  const hub = new WatchHub({ store, clock: systemClock, metrics: new Registry(), logger: silentLogger, limits: WATCH_LIMITS_TEST });
  const server = createHttpServer((_req, res) => res.end());
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = await WatchClient.connect(url);
  try {
    assert.deepEqual(await client.subscribe('g', ['g/']), { type: 'subscribed', id: 'g', fromSeq: 4 });
    const fourth = put('g/k4', 'v4');
    hub.publish([fourth]);
    hub.publish([fourth]); // a repeat is ignored
    await client.waitForSeq('g', 4);

    // Entries 5..8 are applied but never published (as when a replica installs a snapshot), and the log no longer
    // holds them; then entry 9 is published.
    for (let i = 5; i <= 8; i++) put(`g/k${i}`, `v${i}`);
    store.trimLog(1, Number.MAX_SAFE_INTEGER, 100);
    const ninth = put('g/k9', 'v9');
    hub.publish([ninth.entry]); // a replica may hand over decoded entries only
    const done = (await client.waitFor((message) => message.type === 'snapshot' && message.done)) as Extract<ServerMessage, { type: 'snapshot' }>;
    assert.equal(done.seq, 9);
    const items = client.of('g').flatMap((message) => (message.type === 'snapshot' ? message.items.map((item) => `${item.key}=${item.value}`) : []));
    assert.deepEqual(items, Array.from({ length: 9 }, (_, i) => `g/k${i + 1}=v${i + 1}`));
    const tenth = put('g/k10', 'v10');
    hub.publish([tenth]);
    await client.waitForSeq('g', 10);
    assert.deepEqual(
      client.eventsOf('g').map((message) => message.seq),
      [4, 10],
    );
  } finally {
    client.terminate();
    await hub.close();
    await new Promise((resolve) => server.close(resolve));
    await store.close();
    removeDir(dir);
  }
});
