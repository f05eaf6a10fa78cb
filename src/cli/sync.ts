/**
 * `mercury sync PREFIX DIR [--exec CMD] [--exec-debounce-ms N] [--max-files N] [--max-bytes N]`: a printer over DirectorySync (src/sync/), until
 * Ctrl-C or SIGTERM (exit 0). One line per change for people (`SEQ put PATH`, `SEQ delete PATH`, `SEQ skipped: ...`),
 * one JSON object per line with --json (the SyncReport fields: `type`, `seq`, `path`, ...).
 */
import type { ClientTls } from '../client/index.js';
import { printResult, formatDuration } from './output.js';

export async function syncCommand(
  urls: readonly string[],
  prefix: string,
  dir: string,
  options: { exec?: string; execDebounceMs?: number; filesMax?: number; bytesMax?: number; json: boolean; tls?: ClientTls; token?: string },
): Promise<void> {
  const { DirectorySync } = await import('../sync/index.js');
  const sync = new DirectorySync({
    urls,
    prefix: Buffer.from(prefix, 'utf8'),
    dir,
    exec: options.exec,
    execDebounceMs: options.execDebounceMs,
    filesMax: options.filesMax,
    bytesMax: options.bytesMax,
    clientOptions: { ...options.tls, ...(options.token === undefined ? {} : { token: options.token }) },
    onReport: (report) =>
      printResult(options.json, report, () => {
        switch (report.type) {
          case 'start':
            return `syncing ${JSON.stringify(prefix)} into ${report.dir} from seq ${report.fromSeq}${report.resumed ? ' (resumed)' : ''}${report.folds === undefined ? '' : `; its file system folds ${report.folds}: keys that differ only so share one file, the later put takes it`}`;
          case 'reset':
            return `starting again: ${report.reason}; deleted ${report.deleted} files`;
          case 'put':
          case 'delete':
            return `${report.seq} ${report.type} ${report.path}`;
          case 'skipped':
            return `${report.seq} skipped: ${report.reason}`;
          case 'snapshot':
            return `${report.seq} snapshot: ${report.files} files, ${report.deleted} deleted`;
          case 'exec':
            return `${report.seq} exec: ${report.signal === null ? `exit ${report.exitCode}` : `killed by ${report.signal}`} in ${formatDuration(report.durationMs)}`;
        }
      }),
  });
  const stop = (): void => {
    void sync.stop();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await sync.run();
}
