/**
 * A replica whose replication a test pauses with the store's own storage failure: in this process, so that a store
 * method can be wrapped to throw it (a full disk cannot be made to fail LMDB's small writes reliably: freed pages are
 * reused), following a real root.
 */
import { validateConfig } from '../../src/config/index.js';
import type { MercuryError } from '../../src/errors/index.js';
import { MercuryNode, NODE_LIMITS_TEST, validateNodeLimits, withLimits } from '../../src/node/index.js';
import { storageFault } from '../../src/store/health.js';
import type { Store } from '../../src/store/index.js';
import { recordingLogger, requestJson } from './http.js';
import { eventually, type ReplicationStatusJson } from './tree.js';

export type PauseStatus = { seq: number; replication: ReplicationStatusJson & { storagePause: { code: string; message: string } | null } };

/** What the store throws when its write transaction meets a full disk (STORAGE_FULL). */
export function diskFullFault(): MercuryError {
  return storageFault(Object.assign(new Error('No space left on device: Attempting to write page'), { code: 28 }))!;
}

/**
 * Makes `store[method]` throw the store's full-disk error (`diskFullFault`) until `heal` is called, and the call
 * through afterwards; `faults` holds each error thrown.
 */
export function failWithFullDisk(store: Store, method: 'applyVerified' | 'recordDivergence' | 'finishSnapshotInstall'): { faults: MercuryError[]; heal: () => void } {
  const original = (store[method] as (...args: unknown[]) => void).bind(store);
  const faults: MercuryError[] = [];
  let failing = true;
  (store as unknown as Record<typeof method, (...args: unknown[]) => void>)[method] = (...args) => {
    if (!failing) return original(...args);
    const fault = diskFullFault();
    faults.push(fault);
    throw fault;
  };
  return { faults, heal: () => (failing = false) };
}

/**
 * Starts a replica of `rootUrl` on `dataDir` (its replication at `upstream`), its error log lines kept in `errors`, and
 * waits until it holds the root's head.
 */
export async function followingReplica(dataDir: string, upstream: string, rootUrl: string, errors: string[]): Promise<{ replica: MercuryNode; status: () => Promise<PauseStatus> }> {
  const replica = await MercuryNode.start(validateConfig({ dataDir, port: 0, upstreams: [upstream] }), {
    auth: 'off',
    // Test timings, but for the stale time: the root is a `mercury serve` process, which heartbeats once a second, and
    // the test limits' 750 ms had the replica give up on it between two heartbeats and reconnect all through a test
    // (its lastFailure "upstream stale"; review, 2026-12-07).
    limits: validateNodeLimits(withLimits(NODE_LIMITS_TEST, { replication: { upstreamStaleMs: 3_000, preferredUpstreamRetryMs: 6_000 } })),
    logger: recordingLogger(errors),
  });
  const status = (): Promise<PauseStatus> => requestJson<PauseStatus>(replica.url, 'GET', '/v1/status');
  const rootHead = await requestJson<{ seq: number }>(rootUrl, 'GET', '/v1/status');
  await eventually(
    async () => (await status()).seq === rootHead.seq,
    async () => `the replica did not follow the root: ${JSON.stringify(await status())}`,
  );
  return { replica, status };
}
