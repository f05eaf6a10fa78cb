/**
 * Where entries are written. The group committer decides *what* goes into an entry; an EntryWriter runs the LMDB write
 * transaction. Two implementations:
 *
 * - `InThreadWriter` commits on the calling thread. Simple; used by tests and tools.
 * - `WorkerWriter` commits on a dedicated worker thread (writer-worker.ts). lmdb 3.5 fsyncs inside `transactionSync`
 *   on the calling thread; on the main thread that stalls HTTP for the whole fsync. In a worker, the main thread keeps
 *   parsing requests (which join the next entry) while the current one is being made durable. See docs/decisions.md.
 */
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { decodeEntry, type EncodedEntry } from '../log/index.js';
import { evaluateCompare, type Store } from '../store/index.js';
import type { WriteRequest } from './requests.js';

export interface BatchOutcome {
  /** The entry, or undefined when no request applied any op. */
  readonly committed: EncodedEntry | undefined;
  /** Per request: whether its compares held. */
  readonly succeeded: boolean[];
}

export interface EntryWriter {
  /** Evaluates and applies the requests in order as one entry, and resolves once it is durable. */
  commitBatch(timeMs: number, requests: readonly WriteRequest[]): Promise<BatchOutcome>;
  /** One bounded step of log trimming (see Store.trimLog); resolves with the number of entries removed. */
  trimLog(retainEntries: number, retainBytes: number, batchEntries: number): Promise<number>;
  close(): Promise<void>;
}

/**
 * Builds one entry from requests in a single write transaction: each request's compares are evaluated against the
 * state left by the requests before it, then its success or failure ops are applied.
 */
export function applyBatch(store: Store, timeMs: number, requests: readonly WriteRequest[]): BatchOutcome {
  const succeeded: boolean[] = [];
  const committed = store.commit(timeMs, (view) => {
    for (const request of requests) {
      const holds = request.compares.every((compare) => evaluateCompare(compare, view.get(compare.key)));
      for (const op of holds ? request.success : request.failure) view.apply(op);
      succeeded.push(holds);
    }
  });
  return { committed, succeeded };
}

export class InThreadWriter implements EntryWriter {
  constructor(private readonly store: Store) {}

  async commitBatch(timeMs: number, requests: readonly WriteRequest[]): Promise<BatchOutcome> {
    const outcome = applyBatch(this.store, timeMs, requests);
    await this.store.flushed();
    return outcome;
  }

  trimLog(retainEntries: number, retainBytes: number, batchEntries: number): Promise<number> {
    return Promise.resolve(this.store.trimLog(retainEntries, retainBytes, batchEntries));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Messages to the worker. Buffers cross as Uint8Arrays (structured clone) and are re-wrapped on the other side. */
export type WriterCommand =
  | { readonly kind: 'commit'; readonly id: number; readonly timeMs: number; readonly requests: readonly WriteRequest[] }
  | { readonly kind: 'trim'; readonly id: number; readonly retainEntries: number; readonly retainBytes: number; readonly batchEntries: number }
  | { readonly kind: 'close'; readonly id: number };

export type WriterReply =
  | { readonly id: number; readonly ok: true; readonly record?: Uint8Array; readonly succeeded?: boolean[]; readonly removed?: number }
  | { readonly id: number; readonly ok: false; readonly error: string };

export class WorkerWriter implements EntryWriter {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (reply: WriterReply & { ok: true }) => void; reject: (error: Error) => void }>();
  private failure: Error | undefined;

  /**
   * `store` is this thread's handle on the same data directory: after each write the worker made, its cached head is
   * refreshed and its read transaction renewed, so reads here see the write before it is acknowledged.
   */
  constructor(private readonly store: Store) {
    this.worker = new Worker(new URL('./writer-worker.js', import.meta.url), { workerData: { path: store.path } });
    this.worker.on('message', (reply: WriterReply) => {
      const waiter = this.pending.get(reply.id);
      assert.ok(waiter !== undefined, `reply to unknown writer command ${reply.id}`);
      this.pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply);
      else waiter.reject(new Error(`writer thread: ${reply.error}`));
    });
    const fail = (error: Error): void => {
      this.failure ??= error;
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`writer thread exited with code ${code}`)));
  }

  private send(command: WriterCommand): Promise<WriterReply & { ok: true }> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.set(command.id, { resolve, reject });
      this.worker.postMessage(command);
    });
  }

  async commitBatch(timeMs: number, requests: readonly WriteRequest[]): Promise<BatchOutcome> {
    const reply = await this.send({ kind: 'commit', id: this.nextId++, timeMs, requests });
    this.store.refresh();
    if (reply.record === undefined) return { committed: undefined, succeeded: reply.succeeded! };
    const record = Buffer.from(reply.record.buffer, reply.record.byteOffset, reply.record.byteLength);
    return { committed: { entry: decodeEntry(record), record }, succeeded: reply.succeeded! };
  }

  async trimLog(retainEntries: number, retainBytes: number, batchEntries: number): Promise<number> {
    const reply = await this.send({ kind: 'trim', id: this.nextId++, retainEntries, retainBytes, batchEntries });
    this.store.refresh();
    return reply.removed!;
  }

  async close(): Promise<void> {
    if (this.failure === undefined) await this.send({ kind: 'close', id: this.nextId++ });
    await this.worker.terminate();
  }
}
