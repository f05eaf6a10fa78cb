/**
 * `mercury sync`'s budget (src/sync/budget.ts) without I/O: what each put and delete counts, a snapshot judged on its
 * own, and the bound on DIR while old files and a snapshot's lie side by side.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SyncBudget } from '../src/sync/budget.js';
import { isMercuryError } from '../src/errors/index.js';

function refused(action: () => void, message: RegExp): void {
  assert.throws(action, (error: unknown) => isMercuryError(error) && error.code === 'SYNC_LIMIT_EXCEEDED' && message.test(error.message));
}

describe('sync budget', () => {
  test('sync budget: a file counts its content and its path; replaces count the difference, deletes free; a refused put counts nothing', () => {
    const budget = new SyncBudget({ filesMax: 3, bytesMax: 30 }, 'DIR');
    budget.start([{ path: 'a', size: 4 }]); // 5
    budget.admitPut('b', 9, undefined); // 15
    budget.admitPut('a', 9, 4); // 20
    refused(() => budget.admitPut('c', 10, undefined), /DIR would go past --max-bytes 30 with c; sync stopped before writing it/);
    budget.admitPut('c', 9, undefined); // 30, 3 files
    refused(() => budget.admitPut('d', 0, undefined), /past --max-files 3 with d/);
    budget.deleted('a', 9); // 20, 2 files
    budget.admitPut('d', 8, undefined);
    // A library caller's limits are checked as the CLI's flags are (found by review: NaN switched the budget off).
    for (const limits of [{ filesMax: Number.NaN, bytesMax: 1 }, { filesMax: 1, bytesMax: 0 }, { filesMax: 1.5, bytesMax: 1 }])
      assert.throws(() => new SyncBudget(limits, 'DIR'), (error: unknown) => isMercuryError(error) && error.code === 'INVALID_ARGUMENT', JSON.stringify(limits));
    refused(
      () => new SyncBudget({ filesMax: 1, bytesMax: 100 }, 'DIR').start([{ path: 'a', size: 1 }, { path: 'b', size: 1 }, { path: 'c', size: 1 }]),
      /DIR holds 3 files of 6 bytes \(paths included\), over twice --max-files 1 \(more than a snapshot stopped midway leaves\); sync did not start/,
    );
  });

  test('sync budget: a snapshot is judged on its own (a key sent twice counts once), and DIR with old files and a snapshot\'s holds at most twice the limits, also when a snapshot begins again', () => {
    const budget = new SyncBudget({ filesMax: 2, bytesMax: 1_000 }, 'DIR');
    budget.start([{ path: 'old1', size: 0 }, { path: 'old2', size: 0 }]);
    budget.snapshotBegin();
    budget.admitPut('n1', 1, undefined);
    budget.admitPut('n1', 2, 1); // sent twice: still one file of the snapshot's
    budget.admitPut('old1', 0, 0); // an old file the snapshot holds too
    refused(() => budget.admitPut('n2', 0, undefined), /the node's state under the prefix \(a snapshot\) goes past --max-files 2 at n2/);
    assert.deepEqual([...budget.snapshotEnd()].sort(), ['n1', 'old1']);
    budget.deleted('old2', 0); // what the end deletes: 2 files again

    // A snapshot begun again (a reconnect) over a first one's files: the snapshot alone fits, DIR would not.
    budget.snapshotBegin();
    budget.admitPut('m1', 0, undefined);
    budget.admitPut('m2', 0, undefined); // 4 files on disk: twice the limit
    budget.snapshotBegin();
    refused(() => budget.admitPut('k1', 0, undefined), /DIR would go past twice --max-files 2 with k1, old files and a snapshot's together/);
    budget.admitPut('m1', 0, 0); // a file already there: the disk does not grow
  });

  test('sync budget: a DIR that a snapshot stopped midway left over the limits (up to twice) starts, and the snapshot sent again fits; outside a snapshot it takes deletes and shrinks, not growth', () => {
    // Before: start refused any DIR over a limit, so a sync stopped (Ctrl-C, a restart) during a snapshot of keys other
    // than DIR's old ones never started again with the same limits, though the node's state fit them.
    const old = [{ path: 'o1', size: 1 }, { path: 'o2', size: 1 }];
    const budget = new SyncBudget({ filesMax: 2, bytesMax: 100 }, 'DIR');
    budget.start([...old, { path: 'n1', size: 1 }]); // o1, o2, and n1 of a snapshot stopped before n2
    budget.snapshotBegin();
    budget.admitPut('n1', 1, 1);
    budget.admitPut('n2', 1, undefined); // 4 files: twice the limit, not past it
    assert.deepEqual([...budget.snapshotEnd()].sort(), ['n1', 'n2']);
    budget.deleted('o1', 1);
    budget.deleted('o2', 1);
    budget.admitPut('n2', 5, 1); // back within the limits: the usual rules

    const over = new SyncBudget({ filesMax: 2, bytesMax: 10 }, 'DIR');
    over.start([{ path: 'a', size: 4 }, { path: 'b', size: 4 }, { path: 'c', size: 0 }]); // 3 files of 11 bytes
    refused(() => over.admitPut('d', 0, undefined), /DIR would go past --max-files 2 with d/);
    refused(() => over.admitPut('a', 5, 4), /DIR would go past --max-bytes 10 with a/);
    over.admitPut('a', 3, 4); // a shrink passes
    over.deleted('b', 4); // 2 files of 5 bytes: within the limits, judged as usual
    refused(() => over.admitPut('b', 0, undefined), /past --max-files 2 with b/);
    over.admitPut('a', 8, 3); // 10 bytes, at the limit
  });
});
