/**
 * `mercury snapshot save|restore|inspect`: backups of a running node into a snapshot file (src/snapshot/format.ts),
 * and data directories made from one. Progress bars on stderr when it is a terminal; the result on stdout, one JSON
 * object with --json.
 *
 * save: the file is written to `FILE.partial-PID` beside FILE (`.mercury-snapshot.partial-PID` when FILE's name is too
 * long for the suffix), checked as it arrives (the same decoder a restore
 * uses: structure, counts, SHA-256), fsynced, and only then renamed to FILE, so FILE is never a partial snapshot: an
 * interrupted or damaged transfer leaves FILE as it was and removes the partial file. FILE's place is checked before
 * anything is asked of the node (a directory at FILE, a directory that does not exist, a symbolic link at FILE, which
 * the rename would replace rather than write through: SYMLINK_REFUSED), not after the transfer. Ctrl-C
 * (SIGINT) or SIGTERM during the wait or the transfer removes the partial file too, then exits 130 or 143.
 *
 * A node that refuses for now (503 OVERLOADED when its snapshot readers are all taken by other backups, joining
 * replicas and watches, docs/decisions.md record 44; a replica that has not joined yet) is asked again after its
 * Retry-After, each wait at most 30 s, for up to `--wait-timeout-ms` (default 5 minutes; 0: no wait) from the first
 * request (retryWhileBusy, src/client/busy.ts). What it waits for is printed on stderr: the first refusal, then a line
 * at most every SAVE_WAIT_REPORT_MS or when the reason changes. Past the deadline it fails with the node's code and
 * says so; any other error fails at once.
 *
 * A node that answers, but slower than any real link would (trickling its headers, or the snapshot, a byte at a time),
 * is cut off with SNAPSHOT_STALLED: the snapshot header must arrive within 5 minutes of each request, and then every 10
 * minutes must bring at least 1 MiB (SAVE_PACE, transfer-pace.ts, says why those numbers).
 *
 * restore and inspect: FILE must be a regular file (through links), checked before anything is read or touched.
 */
import { closeSync, createReadStream, fsyncSync, lstatSync, openSync, readlinkSync, renameSync, rmSync, statSync, writeSync, type Stats } from 'node:fs';
import { basename, dirname, join, sep } from 'node:path';
import { BusyTimeoutError, retryWhileBusy, type BusyWait, type NodeClient } from '../client/index.js';
import { MercuryError } from '../errors/index.js';
import { fileKind } from '../fs/bounded-read.js';
import { fsyncPath } from '../fs/durable.js';
import { freeBytes } from '../fs/free-space.js';
import type { SnapshotHeader } from '../snapshot/index.js';
import { formatBytes, formatCount, formatDuration, printResult, ProgressBar, terminalSafe } from './output.js';
import { PaceGuard, SAVE_PACE, type TransferPace } from './transfer-pace.js';

/** While `snapshot save` waits for a busy node, a line on stderr at most this often (and when the reason changes). */
const SAVE_WAIT_REPORT_MS = 10_000;

/** Read size for files: large enough that the decoder sees few chunks. */
const FILE_CHUNK_BYTES = 1024 * 1024;

function headerJson(header: SnapshotHeader, fileBytes: number): Record<string, unknown> {
  return {
    datasetId: header.datasetId,
    seq: header.seq,
    headHash: header.headHash.toString('hex'),
    keys: header.keyCount,
    dataBytes: header.dataBytes,
    fileBytes,
    savedAt: new Date(header.savedAtMs).toISOString(),
  };
}

function headerLines(header: SnapshotHeader, fileBytes: number): string[] {
  return [
    `dataset   ${header.datasetId}`,
    `seq       ${header.seq}`,
    `head hash ${header.headHash.toString('hex')}`,
    `keys      ${formatCount(header.keyCount)}`,
    `bytes     ${formatBytes(header.dataBytes)} of keys and values, ${formatBytes(fileBytes)} file`,
    `saved at  ${new Date(header.savedAtMs).toISOString()}`,
  ];
}

/** The size of the snapshot file to read; SNAPSHOT_INVALID if it is no regular file (a directory, a pipe, a device). */
function snapshotFileBytes(file: string): number {
  const stats = statSync(file);
  if (!stats.isFile()) throw new MercuryError('SNAPSHOT_INVALID', `${file} is ${fileKind(stats)}, not a snapshot file; give the file that mercury snapshot save wrote`);
  return stats.size;
}

/** Tells the operator, on stderr, what `snapshot save` waits for: not on every retry of a node that asks for 1 s. */
function waitReporter(url: string): (wait: BusyWait) => void {
  let reported: { code: string; atMs: number } | undefined;
  return (wait) => {
    const again = reported !== undefined && reported.code === wait.error.code;
    if (again && wait.waitedMs - reported!.atMs < SAVE_WAIT_REPORT_MS) return;
    reported = { code: wait.error.code, atMs: wait.waitedMs };
    const line = again
      ? `still waiting for ${url} (${wait.error.code}) after ${formatDuration(wait.waitedMs)}; giving up in ${formatDuration(wait.leftMs + wait.delayMs)}`
      : `${url} is busy (${wait.error.code}: ${wait.error.message}); trying again in ${formatDuration(wait.delayMs)}, giving up in ${formatDuration(wait.leftMs + wait.delayMs)} (--wait-timeout-ms)`;
    process.stderr.write(`mercury: ${terminalSafe(line)}\n`);
  };
}

/** Throws STORAGE_FULL when the file system that holds `file` has fewer than `bytes` free for this process. */
function checkRoom(file: string, bytes: number): void {
  const free = freeBytes(dirname(file));
  if (bytes > free)
    throw new MercuryError('STORAGE_FULL', `the snapshot is ${formatBytes(bytes)}, and the disk that holds ${file} has ${formatBytes(free)} free; free space or save elsewhere; ${file} was not written`);
}

/**
 * Writes all of `chunk` to the partial file. The local disk failing is not the node's doing: a full one was reported as
 * the transfer breaking off (SNAPSHOT_INVALID) when the node had sent a sound file (audit, stop 37).
 */
function writeAll(fd: number, chunk: Buffer, file: string): void {
  try {
    for (let at = 0; at < chunk.length; ) at += writeSync(fd, chunk, at);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT')
      throw new MercuryError('STORAGE_FULL', `the disk that holds ${file} is full (${code}); free space or save elsewhere; ${file} was not written`, { cause: error });
    throw new MercuryError('STORAGE_IO_ERROR', `writing next to ${file} failed (${(error as Error).message}); ${file} was not written`, { cause: error });
  }
}

/**
 * Removes the partial file (or directory) and exits if the operator stops the command, saying `what` happened; the
 * returned function removes the handlers.
 */
function removeOnSignal(partial: string, what: string): () => void {
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((signal) => {
    const handler = (): void => {
      rmSync(partial, { recursive: true, force: true });
      process.stderr.write(`mercury: ${signal}: ${what}\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.once(signal, handler);
    return () => process.off(signal, handler);
  });
  return () => handlers.forEach((off) => off());
}

/** NAME_MAX of Linux and macOS file systems: a longer name fails with ENAMETOOLONG. */
const FILE_NAME_BYTES_MAX = 255;

/**
 * Where `save` writes before the rename: `FILE.partial-PID` beside FILE (an operator who finds one knows what it was),
 * or, when FILE's name leaves no room for that suffix within FILE_NAME_BYTES_MAX, a short name in the same directory
 * (the rename must stay within one file system): a name of 250 bytes failed with ENAMETOOLONG at the partial file.
 */
function partialPath(file: string): string {
  const suffix = `.partial-${process.pid}`;
  const name = basename(file);
  if (Buffer.byteLength(name + suffix) <= FILE_NAME_BYTES_MAX) return join(dirname(file), name + suffix);
  return join(dirname(file), `.mercury-snapshot${suffix}`);
}

export interface SaveOptions {
  readonly json: boolean;
  readonly waitMs: number | undefined;
  /** SAVE_PACE unless a test needs one it can trip in seconds. */
  readonly pace?: TransferPace;
}

export async function snapshotSave(client: NodeClient, file: string, options: SaveOptions): Promise<void> {
  const { SnapshotDecoder, snapshotFileBytes: announcedFileBytes } = await import('../snapshot/format.js');
  // Before the transfer, which may take minutes: the rename at its end would fail (for `new-dir/` too, which names a
  // directory that does not exist yet: the transfer ran to its end and then failed, audit of stop 37).
  if (file.endsWith('/') || file.endsWith(sep)) throw new MercuryError('INVALID_ARGUMENT', `${file} ends with a slash, so it names a directory; give the path of the snapshot file to write`);
  const nameBytes = Buffer.byteLength(basename(file));
  if (nameBytes > FILE_NAME_BYTES_MAX)
    throw new MercuryError('INVALID_ARGUMENT', `the name of ${file} is ${nameBytes} bytes, over the ${FILE_NAME_BYTES_MAX} a file system allows; give a shorter file name`);
  let existing: Stats | undefined;
  try {
    // lstat: the rename at the end replaces whatever is at FILE, a link included, and never writes through it.
    existing = lstatSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  // A link at FILE would be replaced by a regular file, not written through: an operator's `latest.snap -> ...` would
  // silently stop pointing where it did, and a link someone else planted would decide nothing either way. Say so and
  // let the operator name the target (decision record 54).
  if (existing?.isSymbolicLink() === true)
    throw new MercuryError(
      'SYMLINK_REFUSED',
      `${file} is a symbolic link (to ${readlinkSync(file)}); snapshot save replaces FILE with a new file and would replace the link, not write through it. Give the link's target as FILE, or remove the link; the node was not asked`,
      { details: { path: file } },
    );
  if (existing !== undefined && !existing.isFile())
    throw new MercuryError('INVALID_ARGUMENT', `${file} is ${fileKind(existing)}; give the path of the snapshot file to write (a new file, or an older snapshot to replace)`);
  const partial = partialPath(file);
  // Made before the request, so a directory that does not exist or cannot be written fails before the node is asked.
  // 'wx' (O_EXCL): never opened through a link planted at that name.
  const fd = openSync(partial, 'wx', 0o600);
  const releaseSignals = removeOnSignal(partial, 'snapshot save stopped; nothing was written');
  let closed = false;
  let renamed = false;
  let response: Awaited<ReturnType<NodeClient['stream']>> | undefined;
  let bar: ProgressBar | undefined;
  const pace = new PaceGuard(options.pace ?? SAVE_PACE, (why) => new MercuryError('SNAPSHOT_STALLED', `${client.baseUrl} ${why}; a node or a link this slow is broken: check the link, or save from another node; ${file} was not written`));
  const request = (): ReturnType<NodeClient['stream']> => {
    pace.requested();
    return client.stream('/v1/snapshot', { signal: pace.signal });
  };
  try {
    try {
      response = await retryWhileBusy(`GET ${client.baseUrl}/v1/snapshot`, request, { waitMs: options.waitMs, onWait: waitReporter(client.baseUrl) });
    } catch (error) {
      if (!(error instanceof BusyTimeoutError)) throw error;
      throw new MercuryError(error.code, `gave up waiting for ${client.baseUrl} after ${formatDuration(error.waitedMs)} (--wait-timeout-ms to wait longer): ${error.last.message}; ${file} was not written`, {
        cause: error,
      });
    }
    const declared = Number(response.headers['content-length']);
    bar = new ProgressBar('save', Number.isSafeInteger(declared) ? declared : undefined, 'bytes');
    const decoder = new SnapshotDecoder();
    // What arrived, which the decoder may not have taken yet (it holds a record's bytes until the record is whole).
    let received = 0;
    try {
      let roomChecked = false;
      // Counted by the pace, which turns the cut it makes of a node falling behind into its SNAPSHOT_STALLED.
      for await (const chunk of pace.paced(response as AsyncIterable<Buffer>)) {
        received += chunk.length;
        decoder.push(chunk);
        // Once the header says how large the file is: a node announcing more than the disk can take (a hostile one
        // claimed 2^50 keys and wrote 2.2 GB in 8 s, audit of stop 37) is refused before the disk fills.
        if (!roomChecked && decoder.header !== undefined) {
          roomChecked = true;
          pace.headerReceived();
          checkRoom(file, announcedFileBytes(decoder.header));
        }
        writeAll(fd, chunk, file);
        bar.update(decoder.bytesRead);
      }
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === 'SNAPSHOT_STALLED' || code === 'SNAPSHOT_INVALID' || code === 'STORAGE_FULL' || code === 'STORAGE_IO_ERROR') throw error;
      throw new MercuryError('SNAPSHOT_INVALID', `the transfer from ${client.baseUrl} broke off after ${formatBytes(received)}: ${(error as Error).message}; ${file} was not written`, {
        cause: error,
      });
    }
    const header = decoder.end();
    fsyncSync(fd);
    closeSync(fd);
    closed = true;
    renameSync(partial, file);
    renamed = true;
    fsyncPath(dirname(file));
    bar.finish();
    const fileBytes = decoder.bytesRead;
    const elapsedMs = bar.elapsedMs();
    printResult(options.json, { file, ...headerJson(header, fileBytes), elapsedMs: Math.round(elapsedMs) }, () =>
      [`saved ${file} in ${formatDuration(elapsedMs)}`, ...headerLines(header, fileBytes)].join('\n'),
    );
  } catch (error) {
    bar?.abandon();
    response?.destroy();
    throw error;
  } finally {
    pace.stop();
    if (!closed) closeSync(fd);
    if (!renamed) rmSync(partial, { force: true });
    releaseSignals();
  }
}

async function* fileChunks(file: string, onRead?: (bytes: number) => void): AsyncGenerator<Buffer> {
  let read = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: FILE_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    read += chunk.length;
    onRead?.(read);
    yield chunk;
  }
}

export async function snapshotInspect(file: string, json: boolean): Promise<void> {
  const { SnapshotDecoder } = await import('../snapshot/format.js');
  const bar = new ProgressBar('inspect', snapshotFileBytes(file), 'bytes');
  const decoder = new SnapshotDecoder();
  try {
    for await (const chunk of fileChunks(file, (read) => bar.update(read))) decoder.push(chunk);
    const header = decoder.end();
    bar.finish();
    printResult(json, { file, ...headerJson(header, decoder.bytesRead), checksum: 'ok' }, () =>
      [...headerLines(header, decoder.bytesRead), 'checksum  OK (SHA-256 of the whole file)'].join('\n'),
    );
  } catch (error) {
    bar.abandon();
    throw error;
  }
}

export interface RestoreCommandOptions {
  readonly dataDir: string;
  readonly force: boolean;
  readonly toSeq: number | undefined;
  readonly client: NodeClient | undefined;
  readonly json: boolean;
  /** Of the entries replayed from the node: SAVE_PACE unless a test needs one it can trip in seconds. */
  readonly pace?: TransferPace;
}

export async function snapshotRestore(file: string, options: RestoreCommandOptions): Promise<void> {
  const { RESTORE_PARTIAL_DIR, restoreSnapshot } = await import('../snapshot/index.js');
  // Before anything: a directory given as FILE must fail here, not once the restore has begun.
  const fileBytes = snapshotFileBytes(file);
  // Stopped half-way, a restore left its partial store (as large as the data) until the next restore (audit, stop 37).
  // The handlers run between awaits only, and the renames that install the new data have none between them: stopped,
  // the directory holds its old data. The data directory's lock names this process, so the next opener takes it over.
  const releaseSignals = removeOnSignal(join(options.dataDir, RESTORE_PARTIAL_DIR), `snapshot restore stopped; ${options.dataDir} keeps the data it had`);
  const fileBar = new ProgressBar('restore', fileBytes, 'bytes');
  let entriesBar: ProgressBar | undefined;
  const client = options.client;
  try {
    const result = await restoreSnapshot({
      dataDir: options.dataDir,
      force: options.force,
      file: fileChunks(file),
      toSeq: options.toSeq,
      fetchEntries:
        client === undefined
          ? undefined
          : async (from, to) => {
              fileBar.finish();
              entriesBar = new ProgressBar('replay', to - from + 1, 'items');
              // Held to the save's pace: bounded by silence alone, a node sending a byte every 100 s held the restore
              // for as long as it liked (audit of the client, 2026-12-06).
              const pace = new PaceGuard(
                options.pace ?? SAVE_PACE,
                (why) => new MercuryError('SNAPSHOT_STALLED', `${client.baseUrl} ${why}; a node or a link this slow is broken: check the link, or restore from another node; ${options.dataDir} keeps the data it had`),
                "the entry stream's headers",
              );
              pace.requested();
              try {
                const response = (await client.stream(`/v1/snapshot/entries?from=${from}&to=${to}`, { signal: pace.signal })) as AsyncIterable<Buffer>;
                pace.headerReceived();
                return pace.paced(response);
              } catch (error) {
                pace.stop();
                throw error;
              }
            },
      onProgress: (progress) => (progress.phase === 'snapshot' ? fileBar : entriesBar)?.update(progress.done),
    });
    if (entriesBar === undefined) fileBar.finish();
    else entriesBar.finish();
    const elapsedMs = fileBar.elapsedMs();
    printResult(
      options.json,
      { dataDir: options.dataDir, file, ...headerJson(result.header, fileBytes), seq: result.seq, headHash: result.headHash, replayedEntries: result.replayedEntries, elapsedMs: Math.round(elapsedMs) },
      () =>
        [
          `restored ${options.dataDir} from ${file} in ${formatDuration(elapsedMs)}: dataset ${result.header.datasetId}, seq ${result.seq}`,
          `  ${formatCount(result.header.keyCount)} keys (${formatBytes(result.header.dataBytes)}) at seq ${result.header.seq}${result.replayedEntries > 0 ? `, then ${formatCount(result.replayedEntries)} entries replayed from the log` : ''}`,
          `  head hash ${result.headHash}`,
          `start it as a root:    mercury serve --data-dir ${options.dataDir}`,
          `or as a replica:       mercury serve --data-dir ${options.dataDir} --upstream HOST:PORT`,
        ].join('\n'),
    );
  } catch (error) {
    (entriesBar ?? fileBar).abandon();
    throw error;
  } finally {
    releaseSignals();
  }
}

