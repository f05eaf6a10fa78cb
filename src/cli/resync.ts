/**
 * `mercury resync [--wait [--wait-timeout-ms N]]`: asks a replica to drop its chain and take a full snapshot from its
 * upstream. With --wait it follows the replica's status until the snapshot is installed and the replica streams
 * again, with a progress bar of the keys received (the replica reports them while the snapshot arrives), and prints
 * how long it took.
 *
 * --wait gives up (RESYNC_STALLED, exit 1) once the replica has shown no progress for `waitTimeoutMs`: no change of
 * phase, of keys received or of snapshots installed. A replica whose upstream is down, or that never leaves its
 * snapshot, was otherwise polled forever. Progress, not the whole wait, is what is bounded: a large snapshot may
 * rightly take longer than any fixed deadline. The replica goes on by itself; the error says where it stands.
 */
import { pauseKeepingAlive, systemClock } from '../clock/index.js';
import type { NodeClient } from '../client/index.js';
import { MercuryError } from '../errors/index.js';
import { answerObject, fieldText, formatCount, formatDuration, printResult, ProgressBar } from './output.js';

/** How often --wait asks the replica: often enough for a lively bar, cheap for the node (one status read). */
const RESYNC_POLL_MS = 250;
/** --wait's default for how long the replica may show no progress: far longer than a healthy replica is silent. */
export const RESYNC_WAIT_TIMEOUT_MS_DEFAULT = 5 * 60_000;

interface Replication {
  readonly phase: string | undefined;
  readonly resyncPending: boolean;
  readonly snapshotsInstalled: number;
  readonly snapshot: { readonly keyCount: number; readonly keysReceived: number } | undefined;
  readonly lastFailure: string | undefined;
}

function numberOr(value: unknown, otherwise: number): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : otherwise;
}

/** What --wait reads of a status answer, each field checked (a missing or odd one reads as "no news"). */
function replicationOf(status: Record<string, unknown>): Replication {
  const replication = typeof status.replication === 'object' && status.replication !== null ? (status.replication as Record<string, unknown>) : {};
  const snapshot = typeof replication.snapshot === 'object' && replication.snapshot !== null ? (replication.snapshot as Record<string, unknown>) : undefined;
  return {
    phase: typeof replication.phase === 'string' ? replication.phase : undefined,
    resyncPending: replication.resyncPending === true,
    snapshotsInstalled: numberOr(replication.snapshotsInstalled, 0),
    snapshot: snapshot === undefined ? undefined : { keyCount: numberOr(snapshot.keyCount, 0), keysReceived: numberOr(snapshot.keysReceived, 0) },
    lastFailure: typeof replication.lastFailure === 'string' ? replication.lastFailure : undefined,
  };
}

async function statusOf(client: NodeClient): Promise<Record<string, unknown>> {
  return answerObject(await client.status(), 'the status');
}

export async function resyncCommand(client: NodeClient, options: { json: boolean; wait: boolean; waitTimeoutMs?: number }): Promise<void> {
  const installedBefore = options.wait ? replicationOf(await statusOf(client)).snapshotsInstalled : 0;
  const result = answerObject(await client.resync(), 'the resync answer');
  if (!options.wait) {
    printResult(options.json, result, () => `resync started at seq ${fieldText(result.seq)}; follow it with mercury status (or resync --wait)`);
    return;
  }
  const waitTimeoutMs = options.waitTimeoutMs ?? RESYNC_WAIT_TIMEOUT_MS_DEFAULT;
  const bar = new ProgressBar('resync', undefined, 'items');
  let progress = '';
  let progressMs = systemClock.monotonicMs();
  for (;;) {
    await pauseKeepingAlive(RESYNC_POLL_MS);
    const status = await statusOf(client);
    const replication = replicationOf(status);
    if (replication.snapshot !== undefined) {
      bar.setTotal(replication.snapshot.keyCount);
      bar.update(replication.snapshot.keysReceived);
    }
    if (!replication.resyncPending && replication.snapshotsInstalled > installedBefore && replication.phase === 'streaming') {
      bar.finish();
      const elapsedMs = bar.elapsedMs();
      const keys = numberOr(status.keys, 0);
      printResult(options.json, { resync: 'done', seq: status.seq, keys, elapsedMs: Math.round(elapsedMs) }, () =>
        `resync done in ${formatDuration(elapsedMs)}: seq ${fieldText(status.seq)}, ${formatCount(keys)} keys, streaming from its upstream`,
      );
      return;
    }
    const now = systemClock.monotonicMs();
    const seen = `${replication.phase}/${replication.snapshot?.keysReceived}/${replication.snapshotsInstalled}/${replication.resyncPending}`;
    if (seen !== progress) {
      progress = seen;
      progressMs = now;
    } else if (now - progressMs >= waitTimeoutMs) {
      bar.abandon();
      throw new MercuryError(
        'RESYNC_STALLED',
        `the replica at ${client.baseUrl} showed no progress for ${formatDuration(now - progressMs)} (phase ${replication.phase ?? '?'}${replication.snapshot === undefined ? '' : `, ${formatCount(replication.snapshot.keysReceived)} of ${formatCount(replication.snapshot.keyCount)} keys received`}${replication.lastFailure === undefined ? '' : `, last failure: ${replication.lastFailure}`}); the resync goes on without this command: follow it with mercury status, check the replica's upstream, or wait longer with --wait-timeout-ms`,
      );
    }
  }
}
