/**
 * Group commit on a real store: batching, per-request results, transaction compares evaluated atomically and in
 * order within an entry, the limits every write path shares, back-pressure and shutdown.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { systemClock, type Clock } from '../src/clock/index.js';
import { COMMIT_LIMITS, GroupCommitter, type CommitLimits, type WriteRequest, type WriteResult } from '../src/commit/index.js';
import { MercuryError, type ErrorCode } from '../src/errors/index.js';
import { KEY_BYTES_MAX, TXN_COMPARES_MAX, TXN_OPS_MAX } from '../src/limits.js';
import type { EncodedEntry, Op } from '../src/log/index.js';
import { Registry } from '../src/metrics/index.js';
import { Store, prefixEnd, type Compare, type WriteView } from '../src/store/index.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mercury-group-commit-test-'));
let dirCount = 0;
const cleanups: (() => Promise<void>)[] = [];

after(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  fs.rmSync(root, { recursive: true, force: true });
});

const VALUE_BYTES_MAX = 1000;

interface Fixture {
  readonly store: Store;
  readonly committer: GroupCommitter;
  readonly registry: Registry;
}

function fixture(options: { dir?: string; clock?: Clock; limits?: Partial<CommitLimits> } = {}): Fixture {
  const store = Store.open({ path: options.dir ?? path.join(root, `store-${++dirCount}`) });
  const registry = new Registry();
  const committer = new GroupCommitter({ clock: options.clock ?? systemClock, limits: { ...COMMIT_LIMITS, valueBytesMax: VALUE_BYTES_MAX, ...options.limits }, store, metrics: registry });
  cleanups.push(async () => {
    await committer.close();
    await store.close();
  });
  return { store, committer, registry };
}

const b = (text: string): Buffer => Buffer.from(text);
const put = (key: string | Buffer, value: string | Buffer = 'v'): Op => ({
  type: 'put',
  key: typeof key === 'string' ? b(key) : key,
  value: typeof value === 'string' ? b(value) : value,
});
const del = (key: string): Op => ({ type: 'delete', key: b(key) });
const deletePrefix = (prefix: string): Op => ({ type: 'deleteRange', start: b(prefix), end: prefixEnd(b(prefix)) });
const txn = (compares: readonly Compare[], success: readonly Op[], failure: readonly Op[] = []): WriteRequest => ({ compares, success, failure });
const plain = (...ops: Op[]): WriteRequest => txn([], ops);

function value(store: Store, key: string): string | undefined {
  return store.get(b(key)).record?.value.toString();
}

/** Asserts that `promise` rejects with a MercuryError of `code`. */
async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof MercuryError, `expected MercuryError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** Every key a committed entry writes or deletes, mapped to that entry's seq. */
function seqOfKeys(store: Store): Map<string, number> {
  const seqs = new Map<string, number>();
  for (const { entry } of store.readLog(1, 100_000)) {
    for (const op of entry.ops) if (op.type !== 'deleteRange') seqs.set(op.key.toString(), entry.seq);
  }
  return seqs;
}

describe('group commit batching', () => {
  test('group commit: concurrent submits coalesce into fewer entries, each result carries its entry seq', async () => {
    const { store, committer, registry } = fixture();
    const committed: EncodedEntry[] = [];
    committer.onCommitted((entry) => committed.push(entry));
    const requestCount = 600;
    const pending: Promise<WriteResult>[] = [];
    // Requests arrive over several turns of the event loop, some while an entry is being committed.
    for (let wave = 0; wave < 6; wave++) {
      for (let i = 0; i < requestCount / 6; i++) pending.push(committer.submit(plain(put(`batch/${wave}/${i}`, `${wave}.${i}`))));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const results = await Promise.all(pending);
    const entries = store.head().seq;
    // A batch takes everything queued, so there can be no more entries than waves of arrivals.
    assert.ok(entries <= 6, `${requestCount} requests in 6 waves took ${entries} entries`);
    assert.ok(entries >= 1);

    // Each result names the entry that holds its write, and order of submission is order in the log.
    const seqs = seqOfKeys(store);
    let keyIndex = 0;
    let previousSeq = 0;
    for (let wave = 0; wave < 6; wave++) {
      for (let i = 0; i < requestCount / 6; i++) {
        const result = results[keyIndex++]!;
        assert.equal(result.succeeded, true);
        assert.equal(result.seq, seqs.get(`batch/${wave}/${i}`));
        assert.ok(result.seq >= previousSeq);
        previousSeq = result.seq;
        assert.equal(value(store, `batch/${wave}/${i}`), `${wave}.${i}`);
      }
    }
    // Listeners saw every entry once, in seq order.
    assert.deepEqual(
      committed.map(({ entry }) => entry.seq),
      Array.from({ length: entries }, (_, i) => i + 1),
    );
    assert.equal(
      committed.reduce((sum, { entry }) => sum + entry.ops.length, 0),
      requestCount,
    );
    assert.match(registry.render(), new RegExp(`^mercury_entries_written_total ${entries}$`, 'm'));
  });

  test('group commit: requests submitted in one turn become one entry', async () => {
    const { store, committer } = fixture();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => committer.submit(plain(put(`one/${i}`)))));
    assert.equal(store.head().seq, 1);
    assert.ok(results.every((result) => result.seq === 1 && result.succeeded));
  });

  test('group commit: onCommitted listeners run in seq order across many entries', async () => {
    const { store, committer } = fixture();
    const first: number[] = [];
    const second: number[] = [];
    committer.onCommitted(({ entry }) => first.push(entry.seq));
    committer.onCommitted(({ entry }) => second.push(entry.seq));
    // Sequential submits: one entry each.
    for (let i = 0; i < 5; i++) await committer.submit(plain(put(`seq/${i}`)));
    // Then overlapping ones.
    await Promise.all(
      Array.from({ length: 5 }, async (_, i) => {
        for (let j = 0; j < 4; j++) await committer.submit(plain(put(`seq/${i}/${j}`)));
      }),
    );
    const expected = Array.from({ length: store.head().seq }, (_, i) => i + 1);
    assert.deepEqual(first, expected);
    assert.deepEqual(second, expected);
  });

  test('group commit: entries in flight one after another are acknowledged in seq order, each once its entry is durable', async () => {
    const { store, committer } = fixture();
    // The seq that the store has reported durable: `flushed` taken after an entry resolves once that entry is on disk.
    let durableSeq = 0;
    const flushed = store.flushed.bind(store);
    store.flushed = () => {
      const seq = store.head().seq;
      return flushed().then((done) => {
        durableSeq = Math.max(durableSeq, seq);
        return done;
      });
    };
    const order: number[] = [];
    const notified: number[] = [];
    committer.onCommitted(({ entry }) => {
      assert.ok(durableSeq >= entry.seq, `entry ${entry.seq} passed to the listeners before it was durable`);
      notified.push(entry.seq);
    });
    const pending: Promise<void>[] = [];
    // Eight waves, each submitted on its own turn while the previous waves are queued or committing: eight entries.
    for (let wave = 0; wave < 8; wave++) {
      for (let i = 0; i < 10; i++)
        pending.push(
          committer.submit(plain(put(`wave/${wave}/${i}`, `${wave}`))).then(({ seq }) => {
            // Acknowledged only once its own entry is durable, and no later entry was acknowledged before it.
            assert.ok(durableSeq >= seq, `seq ${seq} acknowledged before it was durable (durable up to ${durableSeq})`);
            assert.equal(value(store, `wave/${wave}/${i}`), `${wave}`);
            order.push(seq);
          }),
        );
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all(pending);
    assert.ok(store.head().seq >= 2, `the waves made ${store.head().seq} entries, expected several`);
    assert.deepEqual(order, [...order].sort((x, y) => x - y), 'acknowledgements out of seq order');
    assert.deepEqual(notified, Array.from({ length: store.head().seq }, (_, i) => i + 1));
  });

  for (const [errno, code] of [
    [28, 'STORAGE_FULL'],
    [5, 'STORAGE_IO_ERROR'],
  ] as const) {
    test(`group commit: a storage failure (${code}) fails exactly the requests of its entry; the entries before and after it stand`, async () => {
      const dir = path.join(root, `store-${++dirCount}`);
      const { store, committer } = fixture({ dir });
      // The disk fails under one entry's transaction, as LMDB reports it (errno in `code`): LMDB aborts the
      // transaction, so nothing of that entry is written.
      let failNext = false;
      let later: Promise<WriteResult> | undefined;
      // On whichever thread the committer commits (record 37). The request `later` is submitted while the failing entry
      // is being built, after its batch was taken: it goes into the next entry, which the disk takes.
      const failing =
        (build: (view: WriteView) => void) =>
        (view: WriteView): void => {
          build(view);
          if (failNext) {
            failNext = false;
            later = committer.submit(plain(put('after')));
            throw Object.assign(new Error(`MDB_PROBLEM: injected errno ${errno}`), { code: errno });
          }
        };
      const commit = store.commit.bind(store);
      const commitAsync = store.commitAsync.bind(store);
      store.commit = (timeMs, build, sign) => commit(timeMs, failing(build), sign);
      store.commitAsync = (timeMs, build, sign) => commitAsync(timeMs, failing(build), sign);
      const notified: number[] = [];
      committer.onCommitted(({ entry }) => notified.push(entry.seq));
      assert.deepEqual(await committer.submit(plain(put('before'))), { succeeded: true, seq: 1 });
      // One turn: one entry of three requests, which the disk fails.
      failNext = true;
      const doomed = [0, 1, 2].map((i) => committer.submit(plain(put(`doomed/${i}`))));
      for (const request of doomed) await rejectsWith(request, code);
      assert.deepEqual(await later, { succeeded: true, seq: 2 });
      assert.deepEqual(notified, [1, 2], 'only written entries reach the listeners that feed replication');
      assert.equal(store.writeFault(), undefined, 'the write after the failure cleared the fault');

      // Reopened: what was acknowledged is there, nothing of the failed entry, and the log links.
      await committer.close();
      await store.close();
      const reopened = Store.open({ path: dir });
      cleanups.push(() => reopened.close());
      assert.equal(reopened.head().seq, 2);
      assert.equal(value(reopened, 'before'), 'v');
      assert.equal(value(reopened, 'after'), 'v');
      for (let i = 0; i < 3; i++) assert.equal(value(reopened, `doomed/${i}`), undefined);
      assert.deepEqual(
        reopened.readLog(1, 10).map(({ entry }) => entry.ops.map((op) => (op.type === 'deleteRange' ? '' : op.key.toString()))),
        [['before'], ['after']],
      );
    });
  }

  test('group commit: an entry is committed off the node thread when something read since the previous one, and on it otherwise', async () => {
    const { store, committer, registry } = fixture();
    const offThread = (): number => Number(/^mercury_entries_committed_off_thread_total (\d+)$/m.exec(registry.render())?.[1] ?? 0);
    // Writes alone: on the node's thread, which costs less per entry.
    assert.equal((await committer.submit(plain(put('first')))).seq, 1);
    assert.equal((await committer.submit(plain(put('second')))).seq, 2);
    assert.equal(offThread(), 0);
    // A read meanwhile: the next commit leaves the thread to readers while it syncs.
    assert.equal(store.get(b('second')).record?.value.toString(), 'v');
    assert.equal((await committer.submit(plain(put('third')))).seq, 3);
    assert.equal(offThread(), 1);
    assert.equal((await committer.submit(plain(put('fourth')))).seq, 4);
    assert.equal(offThread(), 1);
  });

  test('group commit: an entry of 1 MiB of ops or more is committed off the node thread even when nothing read', async () => {
    const { committer, registry } = fixture();
    const offThread = (): number => Number(/^mercury_entries_committed_off_thread_total (\d+)$/m.exec(registry.render())?.[1] ?? 0);
    // Syncing a large entry's pages held the node's thread for as long as they took to write (record 43).
    const large = Array.from({ length: 1100 }, (_, i) => put(`large/${i}`, Buffer.alloc(VALUE_BYTES_MAX, 'x')));
    assert.equal((await committer.submit(plain(...large))).seq, 1);
    assert.equal(offThread(), 1);
    assert.equal((await committer.submit(plain(put('small')))).seq, 2);
    assert.equal(offThread(), 1, 'a small entry with no read since stays on the thread');
  });

  test('group commit: a request that changes nothing resolves at the head seq without an entry', async () => {
    const { store, committer } = fixture();
    const notified: number[] = [];
    committer.onCommitted(({ entry }) => notified.push(entry.seq));
    await committer.submit(plain(put('present')));
    const result = await committer.submit(txn([{ key: b('present'), target: 'exists', exists: false }], [put('never')]));
    assert.deepEqual(result, { succeeded: false, seq: 1 });
    assert.equal(store.head().seq, 1);
    assert.deepEqual(notified, [1]);
  });

  // Not held at the last entry's time: that pinned every later entry to a step of the clock forward (record 42).
  test('group commit: entry times follow the wall clock, back included, and across a restart with a clock behind', async () => {
    const dir = path.join(root, 'clock-behind');
    let nowMs = 5_000_000;
    const backwards: Clock = { ...systemClock, nowMs: () => (nowMs -= 1000) };
    const first = fixture({ dir, clock: backwards });
    for (let i = 0; i < 3; i++) await first.committer.submit(plain(put(`t/${i}`)));
    const times = first.store.readLog(1, 10).map(({ entry }) => entry.timeMs);
    assert.deepEqual(times, [4_999_000, 4_998_000, 4_997_000]);
    await first.committer.close();
    await first.store.close();

    const restarted = fixture({ dir, clock: { ...systemClock, nowMs: () => 1_000 } });
    await restarted.committer.submit(plain(put('t/after-restart')));
    assert.equal(restarted.store.readLog(4, 1)[0]?.entry.timeMs, 1_000);
  });
});

describe('group commit transactions', () => {
  test('group commit: every compare target and operator chooses the right branch', async () => {
    const { store, committer } = fixture();
    // k: createSeq 1, modSeq 3, version 2, value "b".
    await committer.submit(plain(put('k', 'b')));
    await committer.submit(plain(put('unrelated')));
    await committer.submit(plain(put('k', 'b')));
    assert.deepEqual(store.get(b('k')).record, { value: b('b'), createSeq: 1, modSeq: 3, version: 2 });

    const k = b('k');
    const missing = b('missing');
    const cases: [string, Compare, boolean][] = [
      ['value = b', { key: k, target: 'value', operator: '=', value: b('b') }, true],
      ['value = a', { key: k, target: 'value', operator: '=', value: b('a') }, false],
      ['value != a', { key: k, target: 'value', operator: '!=', value: b('a') }, true],
      ['value != b', { key: k, target: 'value', operator: '!=', value: b('b') }, false],
      ['value < c', { key: k, target: 'value', operator: '<', value: b('c') }, true],
      ['value < b', { key: k, target: 'value', operator: '<', value: b('b') }, false],
      ['value > a', { key: k, target: 'value', operator: '>', value: b('a') }, true],
      ['value > ba', { key: k, target: 'value', operator: '>', value: b('ba') }, false],
      ['value = empty', { key: k, target: 'value', operator: '=', value: Buffer.alloc(0) }, false],
      ['modSeq = 3', { key: k, target: 'modSeq', operator: '=', number: 3 }, true],
      ['modSeq = 1', { key: k, target: 'modSeq', operator: '=', number: 1 }, false],
      ['modSeq != 3', { key: k, target: 'modSeq', operator: '!=', number: 3 }, false],
      ['modSeq != 2', { key: k, target: 'modSeq', operator: '!=', number: 2 }, true],
      ['modSeq < 4', { key: k, target: 'modSeq', operator: '<', number: 4 }, true],
      ['modSeq < 3', { key: k, target: 'modSeq', operator: '<', number: 3 }, false],
      ['modSeq > 2', { key: k, target: 'modSeq', operator: '>', number: 2 }, true],
      ['modSeq > 3', { key: k, target: 'modSeq', operator: '>', number: 3 }, false],
      ['version = 2', { key: k, target: 'version', operator: '=', number: 2 }, true],
      ['version = 1', { key: k, target: 'version', operator: '=', number: 1 }, false],
      ['version != 1', { key: k, target: 'version', operator: '!=', number: 1 }, true],
      ['version < 3', { key: k, target: 'version', operator: '<', number: 3 }, true],
      ['version > 2', { key: k, target: 'version', operator: '>', number: 2 }, false],
      ['createSeq = 1', { key: k, target: 'createSeq', operator: '=', number: 1 }, true],
      ['createSeq != 1', { key: k, target: 'createSeq', operator: '!=', number: 1 }, false],
      ['createSeq < 1', { key: k, target: 'createSeq', operator: '<', number: 1 }, false],
      ['createSeq > 0', { key: k, target: 'createSeq', operator: '>', number: 0 }, true],
      ['exists', { key: k, target: 'exists', exists: true }, true],
      ['not exists', { key: k, target: 'exists', exists: false }, false],
      // A missing key has modSeq, version and createSeq 0, and no value to compare.
      ['missing exists', { key: missing, target: 'exists', exists: true }, false],
      ['missing not exists', { key: missing, target: 'exists', exists: false }, true],
      ['missing modSeq = 0', { key: missing, target: 'modSeq', operator: '=', number: 0 }, true],
      ['missing version = 0', { key: missing, target: 'version', operator: '=', number: 0 }, true],
      ['missing createSeq = 0', { key: missing, target: 'createSeq', operator: '=', number: 0 }, true],
      ['missing version > 0', { key: missing, target: 'version', operator: '>', number: 0 }, false],
      ['missing modSeq < 1', { key: missing, target: 'modSeq', operator: '<', number: 1 }, true],
      ['missing value = empty', { key: missing, target: 'value', operator: '=', value: Buffer.alloc(0) }, false],
      ['missing value != x', { key: missing, target: 'value', operator: '!=', value: b('x') }, false],
    ];
    // All in one entry: none of them touches k, so each sees the same k.
    const results = await Promise.all(
      cases.map(([, compare], i) => committer.submit(txn([compare], [put(`s/${i}`, 'S')], [put(`f/${i}`, 'F')]))),
    );
    cases.forEach(([name, , holds], i) => {
      assert.equal(results[i]!.succeeded, holds, name);
      assert.equal(value(store, `s/${i}`), holds ? 'S' : undefined, name);
      assert.equal(value(store, `f/${i}`), holds ? undefined : 'F', name);
    });
  });

  test('group commit: a transaction applies its whole branch or none of it', async () => {
    const { store, committer } = fixture();
    await committer.submit(plain(put('guard', '1'), put('c', 'x'), put('p/1'), put('p/2'), put('q')));
    const request = (guard: string): WriteRequest =>
      txn(
        [
          { key: b('guard'), target: 'value', operator: '=', value: b(guard) },
          { key: b('guard'), target: 'version', operator: '=', number: 1 },
        ],
        [put('a'), put('b'), del('c'), deletePrefix('p/')],
        [put('d')],
      );
    // One of two compares fails: only the failure branch.
    const failed = await committer.submit(request('2'));
    assert.equal(failed.succeeded, false);
    assert.deepEqual(
      ['a', 'b', 'c', 'd', 'p/1', 'p/2', 'q'].map((key) => value(store, key)),
      [undefined, undefined, 'x', 'v', 'v', 'v', 'v'],
    );
    // All hold: the whole success branch, in one entry.
    const succeeded = await committer.submit(request('1'));
    assert.equal(succeeded.succeeded, true);
    assert.deepEqual(
      ['a', 'b', 'c', 'd', 'p/1', 'p/2', 'q'].map((key) => value(store, key)),
      ['v', 'v', undefined, 'v', undefined, undefined, 'v'],
    );
    const entry = store.readLog(succeeded.seq, 1)[0]!.entry;
    assert.equal(entry.ops.length, 4);
  });

  test('group commit: compares see the requests before them in the same entry', async () => {
    const { store, committer } = fixture();
    const next = store.head().seq + 1;
    const x = b('x');
    // Submitted in one turn, so they share an entry and are evaluated in order.
    const pending = [
      committer.submit(plain(put('x', '1'))),
      committer.submit(txn([{ key: x, target: 'exists', exists: true }], [put('saw-x')], [put('missed-x')])),
      committer.submit(
        txn(
          [
            { key: x, target: 'version', operator: '=', number: 1 },
            { key: x, target: 'createSeq', operator: '=', number: next },
            { key: x, target: 'modSeq', operator: '=', number: next },
            { key: x, target: 'value', operator: '=', value: b('1') },
          ],
          [put('x', '2')],
        ),
      ),
      committer.submit(txn([{ key: x, target: 'version', operator: '=', number: 2 }], [del('x')])),
      committer.submit(txn([{ key: x, target: 'exists', exists: false }], [put('x-gone')], [put('x-still-there')])),
      // Two create-if-absent requests for one key: exactly the first wins.
      committer.submit(txn([{ key: b('lock'), target: 'version', operator: '=', number: 0 }], [put('lock', 'first')])),
      committer.submit(txn([{ key: b('lock'), target: 'version', operator: '=', number: 0 }], [put('lock', 'second')])),
    ];
    const results = await Promise.all(pending);
    assert.deepEqual(
      results.map((result) => result.succeeded),
      [true, true, true, true, true, true, false],
    );
    assert.ok(results.every((result) => result.seq === next), 'all requests must share one entry');
    assert.equal(store.head().seq, next);
    assert.deepEqual(
      ['x', 'saw-x', 'missed-x', 'x-gone', 'x-still-there', 'lock'].map((key) => value(store, key)),
      [undefined, 'v', undefined, 'v', undefined, 'first'],
    );
  });
});

describe('group commit limits', () => {
  test('group commit: keys must be 1 to 1024 bytes, wherever they appear', async () => {
    const { store, committer } = fixture();
    const tooLong = Buffer.alloc(KEY_BYTES_MAX + 1, 0x61);
    const longest = Buffer.alloc(KEY_BYTES_MAX, 0x61);
    await rejectsWith(committer.submit(plain(put(Buffer.alloc(0)))), 'KEY_EMPTY');
    await rejectsWith(committer.submit(plain(put(tooLong))), 'KEY_TOO_LARGE');
    await rejectsWith(committer.submit(plain({ type: 'delete', key: Buffer.alloc(0) })), 'KEY_EMPTY');
    await rejectsWith(committer.submit(plain({ type: 'delete', key: tooLong })), 'KEY_TOO_LARGE');
    await rejectsWith(committer.submit(plain({ type: 'deleteRange', start: Buffer.alloc(0), end: b('z') })), 'KEY_EMPTY');
    await rejectsWith(committer.submit(plain({ type: 'deleteRange', start: b('a'), end: tooLong })), 'KEY_TOO_LARGE');
    await rejectsWith(committer.submit(txn([{ key: Buffer.alloc(0), target: 'exists', exists: true }], [put('k')])), 'KEY_EMPTY');
    await rejectsWith(committer.submit(txn([{ key: tooLong, target: 'exists', exists: true }], [put('k')])), 'KEY_TOO_LARGE');
    await rejectsWith(committer.submit(txn([], [put('ok')], [put(tooLong)])), 'KEY_TOO_LARGE');
    assert.equal(store.head().seq, 0, 'a refused request must write nothing');

    await committer.submit(plain(put(longest), put(b('1'))));
    // An empty range end means "to the last key" and is allowed.
    await committer.submit(plain({ type: 'deleteRange', start: b('a'), end: Buffer.alloc(0) }));
    assert.equal(store.head().seq, 2);
    assert.equal(store.get(longest).record, undefined);
    assert.equal(value(store, '1'), 'v');
  });

  test('group commit: values are limited by the configured maximum', async () => {
    const { store, committer } = fixture();
    await rejectsWith(committer.submit(plain(put('big', Buffer.alloc(VALUE_BYTES_MAX + 1)))), 'VALUE_TOO_LARGE');
    await rejectsWith(
      committer.submit(txn([{ key: b('big'), target: 'value', operator: '=', value: Buffer.alloc(VALUE_BYTES_MAX + 1) }], [put('k')])),
      'VALUE_TOO_LARGE',
    );
    assert.equal(store.head().seq, 0);
    await committer.submit(plain(put('big', Buffer.alloc(VALUE_BYTES_MAX, 1)), put('empty', Buffer.alloc(0))));
    assert.equal(store.get(b('big')).record?.value.length, VALUE_BYTES_MAX);
    assert.equal(value(store, 'empty'), '');
  });

  test('group commit: more than 10,000 ops or compares is TOO_MANY_OPS, exactly 10,000 commits', async () => {
    const { store, committer } = fixture();
    const ops = (count: number): Op[] => Array.from({ length: count }, (_, i) => put(`many/${i}`));
    const compares = (count: number): Compare[] => Array.from({ length: count }, () => ({ key: b('c'), target: 'exists', exists: false }));
    await rejectsWith(committer.submit(plain(...ops(TXN_OPS_MAX + 1))), 'TOO_MANY_OPS');
    await rejectsWith(committer.submit(txn([], [], ops(TXN_OPS_MAX + 1))), 'TOO_MANY_OPS');
    await rejectsWith(committer.submit(txn(compares(TXN_COMPARES_MAX + 1), [put('k')])), 'TOO_MANY_OPS');
    assert.equal(store.head().seq, 0);
    const result = await committer.submit(txn(compares(TXN_COMPARES_MAX), ops(TXN_OPS_MAX)));
    assert.equal(result.succeeded, true);
    assert.equal(store.readLog(result.seq, 1)[0]?.entry.ops.length, TXN_OPS_MAX);
  });

  test('group commit: a refused request does not disturb the requests beside it', async () => {
    const { store, committer } = fixture();
    const good = committer.submit(plain(put('good')));
    const bad = committer.submit(plain(put(Buffer.alloc(0))));
    await rejectsWith(bad, 'KEY_EMPTY');
    assert.deepEqual(await good, { succeeded: true, seq: 1 });
    assert.equal(value(store, 'good'), 'v');
  });
});

describe('group commit back-pressure and shutdown', () => {
  test('group commit: a full queue refuses new requests with OVERLOADED', async () => {
    const { store, committer, registry } = fixture({ limits: { queueRequestsMax: 3 } });
    const accepted = [1, 2, 3].map((i) => committer.submit(plain(put(`q/${i}`))));
    await rejectsWith(committer.submit(plain(put('q/4'))), 'OVERLOADED');
    const results = await Promise.all(accepted);
    assert.ok(results.every((result) => result.succeeded));
    assert.equal(value(store, 'q/4'), undefined);
    assert.match(registry.render(), /^mercury_commit_refused_total 1$/m);
    // Once the queue drains, requests are accepted again.
    await committer.submit(plain(put('q/5')));
    assert.equal(value(store, 'q/5'), 'v');
  });

  test('group commit: the queue is bounded by bytes too', async () => {
    // One put of an 80-byte value is 1 + 2 + 3 + 4 + 80 = 90 bytes.
    const { committer } = fixture({ limits: { queueBytesMax: 150 } });
    const first = committer.submit(plain(put('b/1', Buffer.alloc(80))));
    await rejectsWith(committer.submit(plain(put('b/2', Buffer.alloc(80)))), 'OVERLOADED');
    // A smaller request still fits beside the first.
    const small = committer.submit(plain(put('b/3', Buffer.alloc(10))));
    await Promise.all([first, small]);
  });

  test('group commit: close finishes queued writes, then refuses with SHUTTING_DOWN', async () => {
    const { store, committer } = fixture();
    let resolved = false;
    const queued = committer.submit(plain(put('last'))).then((result) => {
      resolved = true;
      return result;
    });
    await committer.close();
    assert.equal(resolved, true, 'close must wait for queued writes');
    assert.deepEqual(await queued, { succeeded: true, seq: 1 });
    assert.equal(value(store, 'last'), 'v');
    await rejectsWith(committer.submit(plain(put('too-late'))), 'SHUTTING_DOWN');
    assert.equal(store.head().seq, 1);
  });
});
