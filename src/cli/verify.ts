/**
 * `mercury verify --data-dir D`: checks a data directory offline (src/store/verify.ts), read-only, beside a running
 * node or not, and on a copy its user may only read (a backup, a read-only mount). A progress bar goes to stderr when
 * it is a terminal. Exit 0 when sound (a replica that has not joined yet, with no dataset and nothing at seq 0, is
 * sound), 1 when damage was found.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { formatCount, formatDuration, ProgressBar, terminalSafe } from './output.js';

/**
 * What became of the walk of LMDB's trees: done under the directory's lock; done without it (the directory is not
 * writable by this user) while no node held it; not done, a node holding the directory (or its lock unreadable);
 * done without the lock but dropped, a node having started or written meanwhile.
 */
type TreeWalk = 'walked' | 'walked without the lock' | 'held' | 'written';

const TREE_LINES: Readonly<Record<TreeWalk, string>> = {
  walked: "b-tree   every page of LMDB's trees is sound",
  'walked without the lock':
    "b-tree   every page of LMDB's trees is sound (walked without the directory's lock, which this user cannot take: the directory is not writable, or its disk is full; no node held it, and none wrote it during the walk)",
  held: 'b-tree   not walked: a running node holds the directory (it walked them when it started), or its lock file is not readable by this user',
  written: 'b-tree   not walked: a node took the directory or wrote data.mdb during the walk, which this user could not lock; run verify again',
};

/**
 * The system's refusal to make the lock: this user may not write the directory, it is on a read-only mount, or its disk
 * is full (verify, which writes nothing else, was refused STORAGE_FULL there, when an operator most wants to check it).
 */
function cannotWrite(error: unknown): boolean {
  const code = (error instanceof MercuryError ? (error.cause as NodeJS.ErrnoException | undefined) : undefined)?.code;
  return code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOSPC';
}

/**
 * What changes when a file is written or replaced; `none` when there is none (the store's open then says what the
 * directory lacks: a bare "ENOENT: ..., stat" was printed for a directory without data.mdb).
 */
function fileIdentity(path: string): string {
  const stat = statSync(path, { bigint: true, throwIfNoEntry: false });
  return stat === undefined ? 'none' : `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
}

/** Returns the exit code. */
export async function verifyCommand(dataDir: string, json: boolean): Promise<number> {
  // Loaded here: LMDB is not needed by the client commands.
  const { Store, dataFileDamaged, lmdbTreeProblem, lockDataDir, lockSeen } = await import('../store/index.js');
  const { verifyStore } = await import('../store/verify.js');
  const { systemClock } = await import('../clock/index.js');
  // LMDB's B-trees first, with plain file reads: a damaged tree would kill this process (SIGBUS, SIGABRT) on the
  // first read that meets it. Only while no node runs on the directory (the lock is free): a running node may reuse
  // pages during the walk, and it walked the trees itself when it started.
  let tree: TreeWalk = 'held';
  let treeProblem: string | undefined;
  const dataFile = join(dataDir, 'data.mdb');
  try {
    const lock = lockDataDir(dataDir, new Date(systemClock.nowMs()).toISOString());
    try {
      treeProblem = lmdbTreeProblem(dataFile);
      tree = 'walked';
    } finally {
      lock.release();
    }
  } catch (error) {
    if (error instanceof MercuryError && error.code === 'DATA_DIR_LOCKED') tree = 'held';
    else if (!cannotWrite(error)) throw error;
    else {
      // A copy or a backup this user may only read, a read-only mount, or a full disk: nobody can write it through this user, but
      // its owner can. Walked only if no lock names a live node, and kept only if no lock came or went and data.mdb
      // was not written by the end (a node writes its lock before anything else, and data.mdb at every commit).
      const before = lockSeen(dataDir);
      const dataBefore = fileIdentity(dataFile);
      if (before.held) tree = 'held';
      else {
        const problem = lmdbTreeProblem(dataFile);
        const after = lockSeen(dataDir);
        if (after.held || after.seen !== before.seen || fileIdentity(dataFile) !== dataBefore) tree = 'written';
        else {
          treeProblem = problem;
          tree = 'walked without the lock';
        }
      }
    }
  }
  // Exit 1 with the same one line as a refused start.
  if (treeProblem !== undefined) throw dataFileDamaged(dataFile, treeProblem);
  const store = Store.open({ path: dataDir, readOnly: true });
  const bar = new ProgressBar('verify', undefined, 'items');
  try {
    const report = verifyStore(store, (progress) => {
      bar.setTotal(progress.total);
      bar.update(progress.done);
    });
    bar.finish();
    // The problems name keys, which anyone with write access chose: terminalSafe, as everything the CLI prints.
    // A replica that has not joined yet (its first snapshot never completed) holds no dataset: sound, and empty.
    const joined = store.datasetId !== '';
    const treeChecked = tree === 'walked' || tree === 'walked without the lock';
    if (json) process.stdout.write(`${terminalSafe(JSON.stringify({ ...report, treeChecked, treeLockTaken: tree === 'walked', joined }))}\n`);
    else {
      const lines = [
        TREE_LINES[tree],
        joined ? '' : `dataset  none: a replica that has not joined yet (seq ${report.head.seq}); it takes a snapshot from its upstream when it reaches one`,
        `head     seq ${report.head.seq} ${report.head.hash}`,
        `log      ${formatCount(report.log.verified)} entries verified (retained ${report.log.firstSeq}..${report.log.lastSeq})`,
        `keys     ${formatCount(report.keys.checked)} checked, ${formatCount(report.keys.damaged)} damaged, ${formatCount(report.keys.checkedAgainstLog)} checked against the log`,
        ...report.problems.map((problem) => `DAMAGE   ${problem}`),
        report.problemCount > report.problems.length ? `DAMAGE   ... and ${report.problemCount - report.problems.length} more` : '',
        report.ok ? `OK: the store is sound (checked in ${formatDuration(bar.elapsedMs())})` : `DAMAGED: ${report.problemCount} problems; see "Damaged data" in the README`,
      ];
      process.stdout.write(`${terminalSafe(lines.filter((line) => line !== '').join('\n'))}\n`);
    }
    return report.ok ? 0 : 1;
  } finally {
    await store.close();
  }
}
