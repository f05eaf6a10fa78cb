/**
 * `mercury resync [--wait]`: asks a replica to drop its chain and take a full snapshot from its upstream. With --wait
 * it follows the replica's status until the snapshot is installed and the replica streams again, with a progress
 * bar of the keys received (the replica reports them while the snapshot arrives), and prints how long it took.
 */
import { pauseKeepingAlive } from '../clock/index.js';
import type { NodeClient } from '../client/index.js';
import { formatCount, formatDuration, printResult, ProgressBar } from './output.js';

/** How often --wait asks the replica: often enough for a lively bar, cheap for the node (one status read). */
const RESYNC_POLL_MS = 250;

interface ReplicationJson {
  readonly phase?: string;
  readonly resyncPending?: boolean;
  readonly snapshotsInstalled?: number;
  readonly snapshot?: { readonly keyCount: number; readonly keysReceived: number } | null;
}

function replicationOf(status: Record<string, unknown>): ReplicationJson {
  const replication: unknown = status.replication;
  return typeof replication === 'object' && replication !== null ? replication : {};
}

export async function resyncCommand(client: NodeClient, options: { json: boolean; wait: boolean }): Promise<void> {
  const installedBefore = options.wait ? replicationOf(await client.status()).snapshotsInstalled ?? 0 : 0;
  const result = await client.resync();
  if (!options.wait) {
    printResult(options.json, result, () => `resync started at seq ${result.seq}; follow it with mercury status (or resync --wait)`);
    return;
  }
  const bar = new ProgressBar('resync', undefined, 'items');
  for (;;) {
    await pauseKeepingAlive(RESYNC_POLL_MS);
    const status = await client.status();
    const replication = replicationOf(status);
    if (replication.snapshot) {
      bar.setTotal(replication.snapshot.keyCount);
      bar.update(replication.snapshot.keysReceived);
    }
    if (replication.resyncPending !== true && (replication.snapshotsInstalled ?? 0) > installedBefore && replication.phase === 'streaming') {
      bar.finish();
      const elapsedMs = bar.elapsedMs();
      printResult(options.json, { resync: 'done', seq: status.seq, keys: status.keys, elapsedMs: Math.round(elapsedMs) }, () =>
        `resync done in ${formatDuration(elapsedMs)}: seq ${status.seq}, ${formatCount(status.keys)} keys, streaming from its upstream`,
      );
      return;
    }
  }
}
