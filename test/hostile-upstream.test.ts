/**
 * Hostile input - what an upstream sends to a replica. A replica without `--trust-key` trusts its upstream's content,
 * but nothing the upstream sends may crash it. Found on a real replica: a snapshot record at version 0xffffffff, then
 * an entry that puts that key, made the store compute version 2^32 and throw a RangeError out of the replication
 * client: the process exited, and again at every restart (the upstream sends the same stream). Now the snapshot
 * decoder refuses a version its seqs cannot hold, and the store's increment cannot overflow. Real `mercury serve`
 * replicas follow a fake upstream on loopback that answers each HELLO with scripted frames.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { sealEntry } from '../src/log/index.js';
import { FrameDecoder, REPLICATION_LIMITS, SnapshotDigest, decodeMessage, encodeEntries, encodeMessage, encodeSnapshotRecord, type HelloMessage } from '../src/replication/index.js';
import { sampleResident } from './support/hostile.js';
import { metricValue } from './support/http.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { eventually, statusOf } from './support/tree.js';

/**
 * A replication listener that answers each connection's HELLO with `script(hello)`, and ignores what follows. With
 * `stream`, it then writes `stream(i)` for i = 0, 1, ... as fast as the socket drains, until the connection closes or
 * `stream` returns undefined; `streamed` lists the bytes written on each connection.
 */
async function fakeUpstream(
  script: (hello: HelloMessage) => Buffer[],
  stream?: (i: number) => Buffer | undefined,
): Promise<{ address: string; hellos: number; streamed: number[]; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const upstream = { address: '', hellos: 0, streamed: [] as number[], close: async () => {} };
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
        if (stream !== undefined) pour(socket, stream, upstream.streamed.push(0) - 1);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  upstream.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  upstream.close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };

  function pour(socket: net.Socket, next: (i: number) => Buffer | undefined, connection: number): void {
    let i = 0;
    const write = (): void => {
      while (!socket.destroyed) {
        const bytes = next(i++);
        if (bytes === undefined) return;
        upstream.streamed[connection]! += bytes.length;
        if (!socket.write(bytes)) return void socket.once('drain', write);
      }
    };
    write();
  }
  return upstream;
}

const MiB = 1024 * 1024;

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

  test('replication: an upstream that claims a signed snapshot and streams records forever is refused after a few MiB', async (t) => {
    // Found by review: a replica with --trust-key checked a snapshot's signature only at its end, so a relay that
    // announced a signed snapshot of any key count could stream records until the replica's disk or map was full.
    const keyDir = join(dir, 'keys');
    mkdirSync(keyDir, { recursive: true });
    const trustKey = join(keyDir, 'root.pub.pem');
    writeFileSync(trustKey, generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }));
    const snapshotHash = Buffer.alloc(32, 5);
    const value = Buffer.alloc(1000, 'x');
    const recordsPerChunk = 256;
    const upstream = await fakeUpstream(
      () => [
        encodeMessage({
          type: 'welcome',
          datasetId: 'dataset-endless',
          nodeId: 'endless-upstream',
          httpUrl: '',
          path: ['endless-upstream'],
          head: { seq: 1, hash: snapshotHash },
          mode: 'snapshot',
          fromSeq: 0,
        }),
        encodeMessage({ type: 'snapshotBegin', seq: 1, hash: snapshotHash, keyCount: 2 ** 40, signed: true }),
      ],
      // Valid chunks, keys ascending, no SNAPSHOT_PROOF ever; stopped at 256 MiB so that a replica without the bound
      // fails this test rather than fill the disk.
      (i) =>
        i * recordsPerChunk * value.length >= 256 * MiB
          ? undefined
          : encodeMessage({
              type: 'snapshotChunk',
              records: Array.from({ length: recordsPerChunk }, (_, j) => ({
                key: Buffer.from(`k${String(i * recordsPerChunk + j).padStart(12, '0')}`),
                value,
                createSeq: 1,
                modSeq: 1,
                version: 1,
              })),
            }),
    );
    upstreams.push(upstream);
    const replica = await startServe(join(dir, 'endless-replica'), ['--upstream', upstream.address, '--trust-key', trustKey]);
    replicas.push(replica);
    await eventually(
      async () => ((await statusOf(replica)) as unknown as { trust: { lastRefusal: { code: string } | null } }).trust.lastRefusal !== null,
      () => `streamed ${upstream.streamed.join(', ')} bytes`,
    );
    const { trust } = (await statusOf(replica)) as unknown as { trust: { lastRefusal: { code: string; message: string } } };
    assert.equal(trust.lastRefusal.code, 'SIGNATURE_MISSING');
    assert.match(trust.lastRefusal.message, /claims the root's signature but sent \d+ bytes of records without a signed proof/);
    // What the first connection carried before the replica closed it: the 4 MiB the protocol allows between proofs, one
    // more chunk, and what the two sockets' buffers held.
    await eventually(() => Promise.resolve(upstream.streamed.length >= 2), () => `${upstream.streamed.length} connections`);
    t.diagnostic(`the first connection carried ${upstream.streamed[0]} bytes`);
    assert.ok(upstream.streamed[0]! < 24 * MiB, `the first connection carried ${upstream.streamed[0]} bytes`);
    assert.equal(replica.child.exitCode, null, 'the replica keeps running');
    assert.equal((await statusOf(replica)).seq, 0, 'nothing installed');
  });

  test('replication: an upstream that ignores the flow-control window cannot make a replica hold more than its bound', async (t) => {
    // Found by review: the replica decoded and held whatever it read, so an upstream that never waited for ACKs (a relay
    // replaying a genuine signed backlog would do) took it to 1.8 GB for 129 MB of entries of 10,000 puts each. Now it
    // stops reading once the held entries weigh `replicaHeldBytesMax` (32 MiB), and TCP holds the rest back.
    const entryOps = 10_000;
    const entries = 150;
    const snapshotHash = Buffer.alloc(32, 9);
    const frames: Buffer[] = [];
    let head: { seq: number; hash: Buffer } = { seq: 1, hash: snapshotHash };
    for (let i = 0; i < entries; i++) {
      const ops = Array.from({ length: entryOps }, (_, j) => ({ type: 'put' as const, key: Buffer.from(`k${j}`), value: Buffer.from('v') }));
      const sealed = sealEntry({ seq: head.seq + 1, timeMs: Date.now(), ops }, head.hash);
      frames.push(encodeEntries([sealed.record]));
      head = sealed.entry;
    }
    const upstream = await fakeUpstream(
      (hello) =>
        hello.head.seq !== 0
          ? [] // a reconnection would mean the replica dropped the stream: the test fails on the seq below
          : [
              encodeMessage({ type: 'welcome', datasetId: 'dataset-flood', nodeId: 'flooding-upstream', httpUrl: '', path: ['flooding-upstream'], head: { seq: 1, hash: snapshotHash }, mode: 'snapshot', fromSeq: 0 }),
              encodeMessage({ type: 'snapshotBegin', seq: 1, hash: snapshotHash, keyCount: 0, signed: false }),
              encodeMessage({ type: 'snapshotEnd', digest: new SnapshotDigest().digest(), signature: undefined }),
            ],
      // Every entry at once, as fast as the socket drains: no ACK is ever waited for.
      (i) => frames[i],
    );
    upstreams.push(upstream);
    const replica = await startServe(join(dir, 'flooded-replica'), ['--upstream', upstream.address]);
    replicas.push(replica);
    const resident = sampleResident(replica.child.pid!);
    await eventually(
      async () => (await statusOf(replica)).seq === head.seq,
      async () => `seq ${(await statusOf(replica)).seq} of ${head.seq}, streamed ${upstream.streamed.join(', ')} bytes`,
      60_000,
    );
    // The replica's own high-water mark: sampling the gauge over HTTP could miss the peak between two reads, and then
    // the check below that the flood outran the writes failed on a fast run (a CI run of 2026-12-06).
    const heldPeak = await metricValue(replica.url, /^mercury_replication_held_bytes_peak (\d+)/m);
    const residentPeak = resident.stop();
    t.diagnostic(`held at most ${(heldPeak / MiB).toFixed(1)} MiB; replica RSS at most ${(residentPeak / MiB).toFixed(0)} MiB`);

    // The flood outran the replica's writes (else this test shows nothing), and what it held stayed within the bound
    // plus one socket read (64 KiB of these records weigh about 1.4 MiB) and one frame (an entry, 2.7 MiB).
    assert.ok(heldPeak > 4 * MiB, `the replica held at most ${heldPeak} bytes: the flood never outran its writes`);
    assert.ok(heldPeak <= 32 * MiB + 4 * MiB, `the replica held ${(heldPeak / MiB).toFixed(1)} MiB of entries`);
    // Nothing lost: every entry written, in order, on the one connection.
    assert.equal((await statusOf(replica)).headHash, head.hash.toString('hex'));
    assert.equal(upstream.hellos, 1, 'the replica never dropped the flooding stream');
    assert.equal(replica.child.exitCode, null);
  });
});
