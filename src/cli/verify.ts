/**
 * `mercury verify --data-dir D`: checks a data directory offline (src/store/verify.ts), read-only, beside a running
 * node or not. A progress bar goes to stderr when it is a terminal. Exit 0 when sound (a replica that has not joined
 * yet, with no dataset and nothing at seq 0, is sound), 1 when damage was found.
 */
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { formatCount, formatDuration, ProgressBar, terminalSafe } from './output.js';

/** Returns the exit code. */
export async function verifyCommand(dataDir: string, json: boolean): Promise<number> {
  // Loaded here: LMDB is not needed by the client commands.
  const { Store, dataFileDamaged, lmdbTreeProblem, lockDataDir } = await import('../store/index.js');
  const { verifyStore } = await import('../store/verify.js');
  const { systemClock } = await import('../clock/index.js');
  // LMDB's B-trees first, with plain file reads: a damaged tree would kill this process (SIGBUS, SIGABRT) on the
  // first read that meets it. Only while no node runs on the directory (the lock is free): a running node may reuse
  // pages during the walk, and it walked the trees itself when it started.
  let treeChecked = false;
  let treeProblem: string | undefined;
  const dataFile = join(dataDir, 'data.mdb');
  try {
    const lock = lockDataDir(dataDir, new Date(systemClock.nowMs()).toISOString());
    try {
      treeProblem = lmdbTreeProblem(dataFile);
      treeChecked = true;
    } finally {
      lock.release();
    }
  } catch (error) {
    if (!(error instanceof MercuryError && error.code === 'DATA_DIR_LOCKED')) throw error;
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
    if (json) process.stdout.write(`${terminalSafe(JSON.stringify({ ...report, treeChecked, joined }))}\n`);
    else {
      const lines = [
        treeChecked ? 'b-tree   every page of LMDB\'s trees is sound' : 'b-tree   not walked: a running node holds the directory (it walked them when it started)',
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
