/**
 * `mercury verify --data-dir D`: checks a data directory offline (src/store/verify.ts), read-only, beside a running
 * node or not. A progress bar goes to stderr when it is a terminal. Exit 0 when sound, 1 when damage was found.
 */
import { formatCount, formatDuration, ProgressBar } from './output.js';

/** Returns the exit code. */
export async function verifyCommand(dataDir: string, json: boolean): Promise<number> {
  // Loaded here: LMDB is not needed by the client commands.
  const { Store } = await import('../store/index.js');
  const { verifyStore } = await import('../store/verify.js');
  const store = Store.open({ path: dataDir, readOnly: true });
  const bar = new ProgressBar('verify', undefined, 'items');
  try {
    const report = verifyStore(store, (progress) => {
      bar.setTotal(progress.total);
      bar.update(progress.done);
    });
    bar.finish();
    if (json) process.stdout.write(`${JSON.stringify(report)}\n`);
    else {
      const lines = [
        `head     seq ${report.head.seq} ${report.head.hash}`,
        `log      ${formatCount(report.log.verified)} entries verified (retained ${report.log.firstSeq}..${report.log.lastSeq})`,
        `keys     ${formatCount(report.keys.checked)} checked, ${formatCount(report.keys.damaged)} damaged, ${formatCount(report.keys.checkedAgainstLog)} checked against the log`,
        ...report.problems.map((problem) => `DAMAGE   ${problem}`),
        report.problemCount > report.problems.length ? `DAMAGE   ... and ${report.problemCount - report.problems.length} more` : '',
        report.ok ? `OK: the store is sound (checked in ${formatDuration(bar.elapsedMs())})` : `DAMAGED: ${report.problemCount} problems; see "Damaged data" in the README`,
      ];
      process.stdout.write(`${lines.filter((line) => line !== '').join('\n')}\n`);
    }
    return report.ok ? 0 : 1;
  } finally {
    await store.close();
  }
}
