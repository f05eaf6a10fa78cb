/**
 * Hostile input - what an upstream sends to a replica. A replica without `--trust-key` trusts its upstream's content,
 * but nothing the upstream sends may crash it. Found on a real replica: a snapshot record at version 0xffffffff, then
 * an entry that puts that key, made the store compute version 2^32 and throw a RangeError out of the replication
 * client: the process exited, and again at every restart (the upstream sends the same stream). Now the snapshot
 * decoder refuses a version its seqs cannot hold, and the store's increment cannot overflow. Real `mercury serve`
 * replicas follow a fake upstream on loopback that answers each HELLO with scripted frames.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { sealEntry } from '../src/log/index.js';
import { FrameDecoder, REPLICATION_LIMITS, SnapshotDigest, decodeMessage, encodeEntries, encodeMessage, encodeSnapshotRecord, type HelloMessage } from '../src/replication/index.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { eventually, statusOf } from './support/tree.js';

/** A replication listener that answers each connection's HELLO with `script(hello)`, and ignores what follows. */
async function fakeUpstream(script: (hello: HelloMessage) => Buffer[]): Promise<{ address: string; hellos: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const upstream = { address: '', hellos: 0, close: async () => {} };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    const decoder = new FrameDecoder(REPLICATION_LIMITS.childFrameBytesMax);
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const message = decodeMessage(frame);
        if (answered || message.type !== 'hello') continue;
        answered = true;
        upstream.hellos++;
        for (const bytes of script(message)) socket.write(bytes);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  upstream.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  upstream.close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return upstream;
}

describe('hostile input - what an upstream sends', () => {
  const dir = makeTempDir('hostile-upstream');
  const replicas: ServeProcess[] = [];
  const upstreams: { close: () => Promise<void> }[] = [];
  after(async () => {
    for (const replica of replicas) await stopProcess(replica.child);
    for (const upstream of upstreams) await upstream.close();
    removeDir(dir);
  });

  test('replication: a snapshot record at version 0xffffffff, then a put of its key, is refused and never crashes the replica', async () => {
    const snapshotHash = Buffer.alloc(32, 3);
    const entry = sealEntry({ seq: 6, timeMs: Date.now(), ops: [{ type: 'put', key: Buffer.from('k'), value: Buffer.from('v2') }] }, snapshotHash);
    const record = { key: Buffer.from('k'), value: Buffer.from('v'), createSeq: 1, modSeq: 5, version: 0xffffffff };
    const digester = new SnapshotDigest();
    digester.updateEncoded(encodeSnapshotRecord(record));
    const digest = digester.digest();
    const welcome = (hello: HelloMessage, mode: 'snapshot' | 'stream') =>
      encodeMessage({
        type: 'welcome',
        datasetId: 'dataset-forged',
        nodeId: 'forging-upstream',
        httpUrl: '',
        path: ['forging-upstream'],
        head: { seq: 6, hash: entry.entry.hash },
        mode,
        fromSeq: mode === 'stream' ? hello.head.seq + 1 : 0,
      });
    const upstream = await fakeUpstream((hello) =>
      hello.head.seq === 0
        ? [
            welcome(hello, 'snapshot'),
            encodeMessage({ type: 'snapshotBegin', seq: 5, hash: snapshotHash, keyCount: 1, signed: false }),
            encodeMessage({ type: 'snapshotChunk', records: [record] }),
            encodeMessage({ type: 'snapshotEnd', digest, signature: undefined }),
            encodeEntries([entry.record]),
          ]
        : // Had the snapshot been installed: the put of its key.
          [welcome(hello, 'stream'), encodeEntries([entry.record])],
    );
    upstreams.push(upstream);
    const replica = await startServe(join(dir, 'replica'), ['--upstream', upstream.address]);
    replicas.push(replica);
    // It tries again and again (the upstream answers the same way each time), and never exits.
    await eventually(
      () => Promise.resolve(upstream.hellos >= 3 || replica.child.exitCode !== null),
      () => `${upstream.hellos} connections`,
    );
    assert.equal(replica.child.exitCode, null, `the replica exited; its log: ${replica.stderr()}`);
    const status = await statusOf(replica);
    assert.equal(status.seq, 0, 'the record was refused, and the snapshot with it');
    assert.match(status.replication.lastFailure ?? '', /MESSAGE_MALFORMED.*version 4294967295, more puts than entries 1 to 5 can hold/);
  });
});
