/**
 * `mercury snapshot save` against a node that trickles (audit, 2026-12-06: only silence was bounded, 120 s between
 * bytes, so a node sending its headers a byte per 100 s held the command for about 19 days). The snapshot header must
 * arrive within the pace's header time of the request, and every window after it must bring the pace's bytes; else the
 * save fails with SNAPSHOT_STALLED and leaves no partial file. `snapshotSave` runs in this process with a pace that
 * trips in about a second (the defaults, SAVE_PACE, take minutes), against a plain node:http server on port 0.
 */
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { snapshotRestore, snapshotSave } from '../src/cli/snapshot.js';
import type { TransferPace } from '../src/cli/transfer-pace.js';
import { SNAPSHOT_FORMAT_VERSION, SnapshotEncoder } from '../src/snapshot/index.js';
import { makeTempDir, removeDir } from './support/process.js';

const KiB = 1024;
/** The snapshot header due within 1 s, then at least 4 KiB per 500 ms. */
const PACE: TransferPace = { headerMs: 1_000, windowMs: 500, windowBytesMin: 4 * KiB };

/** A snapshot file of `keys` records of 1 KiB values. */
function snapshotFile(keys: number): Buffer {
  const encoder = new SnapshotEncoder();
  const value = Buffer.alloc(KiB, 'v');
  const records = Array.from({ length: keys }, (_, index) => ({ key: Buffer.from(`k/${String(index).padStart(4, '0')}`), value, createSeq: 1, modSeq: 1, version: 1 }));
  const dataBytes = records.reduce((sum, record) => sum + record.key.length + record.value.length, 0);
  const header = { version: SNAPSHOT_FORMAT_VERSION, datasetId: 'paced', seq: 9, headHash: Buffer.alloc(32, 1), keyCount: keys, dataBytes, savedAtMs: 1 };
  return Buffer.concat([encoder.header(header), ...records.map((record) => encoder.record(record)), encoder.trailer()]);
}

/** Writes `bytes` from `at` on, `step` bytes every `everyMs`, until the end or until the client hangs up. */
function trickle(write: (piece: Buffer) => void, closed: () => boolean, bytes: Buffer, step: number, everyMs: number, at = 0): void {
  if (closed() || at >= bytes.length) return;
  write(bytes.subarray(at, at + step));
  setTimeout(() => trickle(write, closed, bytes, step, everyMs, at + step), everyMs);
}

async function failure(promise: Promise<unknown>): Promise<{ code?: unknown; message: string }> {
  return promise.then(
    () => assert.fail('the save succeeded'),
    (error: Error & { code?: unknown }) => error,
  );
}

describe('snapshot save pace', () => {
  const dir = makeTempDir('snapshot-save-pace');
  const file = snapshotFile(64);
  let answer: (res: ServerResponse) => void = () => {};
  const server = createServer((_req, res) => answer(res));
  let client: NodeClient;

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    client = new NodeClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    removeDir(dir);
  });

  const leftFiles = (name: string): string[] => readdirSync(dir).filter((entry) => entry.startsWith(name));

  test('snapshot save pace: a node that trickles its status line and headers fails with SNAPSHOT_STALLED at the header time', async () => {
    answer = (res) => {
      const head = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${file.length}\r\n\r\n`);
      trickle((piece) => res.socket!.write(piece), () => res.socket!.destroyed, head, 1, 100);
    };
    const started = performance.now();
    const error = await failure(snapshotSave(client, join(dir, 'headers.snap'), { json: true, waitMs: 0, pace: PACE }));
    assert.equal(error.code, 'SNAPSHOT_STALLED', error.message);
    assert.match(error.message, /^http:\/\/127\.0\.0\.1:\d+ did not send the snapshot header within 1\.0 s of the request \(0 B of the answer received\); .* \S+headers\.snap was not written$/);
    assert.ok(performance.now() - started < 5_000, 'cut at the header time, not at 120 s of silence');
    assert.deepEqual(leftFiles('headers.snap'), [], 'no partial file is left');
  });

  test('snapshot save pace: a node that trickles the snapshot header fails with SNAPSHOT_STALLED', async () => {
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': file.length });
      trickle((piece) => res.write(piece), () => res.destroyed, file, 1, 50);
    };
    const error = await failure(snapshotSave(client, join(dir, 'header.snap'), { json: true, waitMs: 0, pace: PACE }));
    assert.equal(error.code, 'SNAPSHOT_STALLED', error.message);
    assert.match(error.message, /did not send the snapshot header within 1\.0 s of the request \(\d+ B of the answer received\)/);
    assert.deepEqual(leftFiles('header.snap'), []);
  });

  test('snapshot save pace: after the header, a window that brings less than the minimum ends the save with SNAPSHOT_STALLED', async () => {
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': file.length });
      // The header and a first record at once, then 100 bytes every 50 ms: 1 KiB per 500 ms window, under the 4 KiB.
      res.write(file.subarray(0, 2 * KiB));
      trickle((piece) => res.write(piece), () => res.destroyed, file, 100, 50, 2 * KiB);
    };
    const started = performance.now();
    const error = await failure(snapshotSave(client, join(dir, 'slow.snap'), { json: true, waitMs: 0, pace: PACE }));
    assert.equal(error.code, 'SNAPSHOT_STALLED', error.message);
    assert.match(error.message, /sent [\d.]+ (Ki)?B in the last 500 ms, below the 4\.00 KiB per 500 ms the slowest real link carries \([\d.]+ KiB received\)/);
    assert.ok(performance.now() - started < 5_000);
    assert.deepEqual(leftFiles('slow.snap'), []);
  });

  test('snapshot save pace: restore --to-seq holds the node\'s entry stream to the same pace: headers trickled, or nothing sent after them, fail with SNAPSHOT_STALLED and the directory keeps what it had (found by review: only silence was bounded)', async () => {
    const snap = join(dir, 'restore-from.snap');
    writeFileSync(snap, file);
    for (const [name, send] of [
      ['trickled headers', (res: ServerResponse) => trickle((piece) => res.socket!.write(piece), () => res.socket!.destroyed, Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n'), 1, 100)],
      ['silent after its headers', (res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/octet-stream' }).flushHeaders()],
    ] as const) {
      answer = send;
      const dataDir = join(dir, `restored-${name.replace(/ /g, '-')}`);
      const started = performance.now();
      const error = await failure(snapshotRestore(snap, { dataDir, force: false, toSeq: 12, client, json: true, pace: PACE }));
      assert.equal(error.code, 'SNAPSHOT_STALLED', `${name}: ${error.message}`);
      assert.match(error.message, /(did not send the entry stream's headers within 1\.0 s|sent 0 B in the last 500 ms).*restore from another node; \S+ keeps the data it had$/, name);
      assert.ok(performance.now() - started < 10_000, `${name}: cut at the pace, not at 120 s of silence`);
      assert.ok(!existsSync(dataDir), `${name}: the directory the restore made is gone`);
    }
  });

  test('snapshot save pace: a transfer slow but above the minimum, over several windows, is saved', async () => {
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': file.length });
      // 8 KiB every 100 ms: 40 KiB per window, the 68 KiB file in about 0.9 s, so the windows are re-armed.
      trickle((piece) => res.write(piece), () => res.destroyed, file, 8 * KiB, 100);
    };
    await snapshotSave(client, join(dir, 'paced.snap'), { json: true, waitMs: 0, pace: PACE });
    assert.deepEqual(leftFiles('paced.snap'), ['paced.snap']);
  });
});
