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
    refused(() => new SyncBudget({ filesMax: 1, bytesMax: 100 }, 'DIR').start([{ path: 'a', size: 1 }, { path: 'b', size: 1 }]), /DIR holds 2 files of 4 bytes \(paths included\), over --max-files 1; sync did not start/);
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
});
