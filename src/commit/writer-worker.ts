/**
 * The writer thread (see entry-writer.ts): owns all write transactions of a root's data directory. It receives
 * commands one at a time, in order, and answers each once its transaction is durable.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Op } from '../log/index.js';
import { Store, type Compare } from '../store/index.js';
import { applyBatch, type WriterCommand, type WriterReply } from './entry-writer.js';
import type { WriteRequest } from './requests.js';

const port = parentPort!;
const store = Store.open({ path: (workerData as { path: string }).path });

const bytes = (array: Uint8Array): Buffer => Buffer.from(array.buffer, array.byteOffset, array.byteLength);

function reviveOp(op: Op): Op {
  switch (op.type) {
    case 'put':
      return { type: 'put', key: bytes(op.key), value: bytes(op.value) };
    case 'delete':
      return { type: 'delete', key: bytes(op.key) };
    case 'deleteRange':
      return { type: 'deleteRange', start: bytes(op.start), end: bytes(op.end) };
  }
}

function reviveCompare(compare: Compare): Compare {
  return compare.target === 'value' ? { ...compare, key: bytes(compare.key), value: bytes(compare.value) } : { ...compare, key: bytes(compare.key) };
}

function reviveRequest(request: WriteRequest): WriteRequest {
  return { compares: request.compares.map(reviveCompare), success: request.success.map(reviveOp), failure: request.failure.map(reviveOp) };
}

async function handle(command: WriterCommand): Promise<WriterReply> {
  switch (command.kind) {
    case 'commit': {
      const outcome = applyBatch(store, command.timeMs, command.requests.map(reviveRequest));
      await store.flushed();
      return { id: command.id, ok: true, record: outcome.committed?.record, succeeded: outcome.succeeded };
    }
    case 'trim':
      return { id: command.id, ok: true, removed: store.trimLog(command.retainEntries, command.retainBytes, command.batchEntries) };
    case 'close':
      await store.close();
      return { id: command.id, ok: true };
  }
}

// Commands are handled strictly one after another: the chain of promises is the writer's queue.
let queue: Promise<unknown> = Promise.resolve();
port.on('message', (command: WriterCommand) => {
  queue = queue.then(async () => {
    let reply: WriterReply;
    try {
      reply = await handle(command);
    } catch (error) {
      reply = { id: command.id, ok: false, error: String((error as Error)?.stack ?? error) };
    }
    const transfer = reply.ok && reply.record !== undefined && reply.record.byteLength === reply.record.buffer.byteLength ? [reply.record.buffer as ArrayBuffer] : [];
    port.postMessage(reply, transfer);
  });
});
