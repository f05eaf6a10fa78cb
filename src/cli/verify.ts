/**
 * `mercury verify --data-dir D`: checks a data directory offline (src/store/verify.ts), read-only, beside a running
 * node or not. A progress bar goes to stderr when it is a terminal. Exit 0 when sound, 1 when damage was found.
 */
import type { VerifyProgress } from '../store/verify.js';

const BAR_CHARS = 30;

function progressBar(progress: VerifyProgress): string {
  const fraction = progress.total === 0 ? 1 : Math.min(1, progress.done / progress.total);
  const filled = Math.round(fraction * BAR_CHARS);
  return `\rverify [${'#'.repeat(filled)}${'.'.repeat(BAR_CHARS - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${progress.done}/${progress.total}`;
}

/** Returns the exit code. */
export async function verifyCommand(dataDir: string, json: boolean): Promise<number> {
  // Loaded here: LMDB is not needed by the client commands.
  const { Store } = await import('../store/index.js');
  const { verifyStore } = await import('../store/verify.js');
  const store = Store.open({ path: dataDir, readOnly: true });
  const tty = process.stderr.isTTY === true;
  let lastPercent = -1;
  try {
    const report = verifyStore(store, (progress) => {
      if (!tty) return;
      const percent = progress.total === 0 ? 100 : Math.floor((progress.done * 100) / progress.total);
      if (percent === lastPercent) return;
      lastPercent = percent;
      process.stderr.write(progressBar(progress));
    });
    if (tty) process.stderr.write('\n');
    if (json) process.stdout.write(`${JSON.stringify(report)}\n`);
    else {
      const lines = [
        `head     seq ${report.head.seq} ${report.head.hash}`,
        `log      ${report.log.verified} entries verified (retained ${report.log.firstSeq}..${report.log.lastSeq})`,
        `keys     ${report.keys.checked} checked, ${report.keys.damaged} damaged, ${report.keys.checkedAgainstLog} checked against the log`,
        ...report.problems.map((problem) => `DAMAGE   ${problem}`),
        report.problemCount > report.problems.length ? `DAMAGE   ... and ${report.problemCount - report.problems.length} more` : '',
        report.ok ? 'OK: the store is sound' : `DAMAGED: ${report.problemCount} problems; see "Damaged data" in the README`,
      ];
      process.stdout.write(`${lines.filter((line) => line !== '').join('\n')}\n`);
    }
    return report.ok ? 0 : 1;
  } finally {
    await store.close();
  }
}
