/**
 * Damaged data met while serving fails only the reader that met it (issue 10, item 2).
 *
 * The attack as found: one flipped byte in a stopped node's log; `GET /v1/log` answered 500 INTERNAL, and a watch
 * catch-up or a replication HELLO from seq 0 killed the process with an uncaught ChainError. Now each of those
 * readers fails alone with DATA_CORRUPTED, the process keeps serving, the damage is logged, counted, shown in
 * `/v1/status`, and `/readyz` fails.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { assertError, metricValue, request, requestJson, waitUntil } from './support/http.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { WatchClient } from './support/watch.js';
import { connect } from 'node:net';
import { parseHostPort } from '../src/config/index.js';
import { GENESIS_HEAD } from '../src/log/index.js';
import { decodeMessage, encodeMessage, FrameDecoder, PROTOCOL_VERSION, REPLICATION_LIMITS, type Message } from '../src/replication/index.js';

/** A value written once, then overwritten: afterwards its bytes are in the log record only (and in freed pages). */
const MARKED_VALUE = 'damaged-in-the-log-only-7f3a9c';

/** Flips one byte inside every copy of `marker` in the data file of a stopped node. Returns how many copies. */
function flipByteOf(dataDir: string, marker: string): number {
  const path = join(dataDir, 'data.mdb');
  const file = readFileSync(path);
  const needle = Buffer.from(marker);
  let copies = 0;
  for (let at = file.indexOf(needle); at !== -1; at = file.indexOf(needle, at + 1)) {
    file[at + Math.floor(needle.length / 2)]! ^= 0x01;
    copies++;
  }
  writeFileSync(path, file);
  return copies;
}



describe('data corruption while serving', () => {
  let root: string;
  let node: ServeProcess;

  before(async () => {
    root = makeTempDir('corruption');
    const dir = join(root, 'root');
    const first = await startServe(dir);
    await requestJson(first.url, 'PUT', '/v1/kv/a', { body: 'one' });
    await requestJson(first.url, 'PUT', '/v1/kv/marked', { body: MARKED_VALUE });
    await requestJson(first.url, 'PUT', '/v1/kv/marked', { body: 'overwritten' });
    await requestJson(first.url, 'PUT', '/v1/kv/b', { body: 'two' });
    await stopProcess(first.child, 'SIGTERM');
    assert.ok(flipByteOf(dir, MARKED_VALUE) >= 1, 'the marked value is in the data file');
    node = await startServe(dir);
  });

  after(async () => {
    if (node !== undefined) await stopProcess(node.child);
    removeDir(root);
  });

  test('data corruption: GET /v1/log over the damaged entry answers 500 DATA_CORRUPTED; reads of sound data go on', async () => {
    const response = await request(node.url, 'GET', '/v1/log?from=1');
    const error = assertError(response, 'DATA_CORRUPTED', 500);
    assert.match(error.message, /log entry 2/);
    // The entries before the damage still read, and so does the key space.
    assert.equal((await requestJson<{ entries: unknown[] }>(node.url, 'GET', '/v1/log?from=1&limit=1')).entries.length, 1);
    assert.equal((await request(node.url, 'GET', '/v1/kv/marked')).body.toString(), 'overwritten');
    assert.equal((await request(node.url, 'GET', '/healthz')).status, 200);
  });

  test('data corruption: a watch catch-up over the damage ends that subscription only, with DATA_CORRUPTED', async () => {
    const watch = await WatchClient.connect(node.url);
    try {
      const live = await watch.subscribe('live', ['']);
      assert.equal(live.type, 'subscribed');
      await watch.subscribe('old', [''], { fromSeq: 1 });
      const ended = await watch.waitFor((message) => message.type === 'error' && message.id === 'old');
      assert.equal((ended as { code: string }).code, 'DATA_CORRUPTED');
      // The connection and its live subscription go on.
      const { seq } = await requestJson<{ seq: number }>(node.url, 'PUT', '/v1/kv/c', { body: 'three' });
      await watch.waitForSeq('live', seq);
      assert.equal(watch.socket.readyState, watch.socket.OPEN);
    } finally {
      watch.close();
    }
  });

  test('data corruption: a child that says HELLO from seq 0 is refused (UNAVAILABLE); the upstream keeps running', async () => {
    const before = await metricValue(node.url, /^mercury_data_corruption_total /);
    const { datasetId } = await requestJson<{ datasetId: string }>(node.url, 'GET', '/v1/status');
    const { host, port } = parseHostPort(node.replication, 'replication');
    const socket = connect(port, host);
    const decoder = new FrameDecoder(REPLICATION_LIMITS.frameBytesMax);
    const refused = new Promise<Message>((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        for (const frame of decoder.push(chunk)) {
          const message = decodeMessage(frame);
          if (message.type === 'refuse') resolve(message);
        }
      });
      socket.on('error', reject);
    });
    socket.write(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId, nodeId: 'child-at-0', path: [], head: GENESIS_HEAD, httpUrl: '' }));
    const message = await refused;
    socket.destroy();
    assert.equal(message.type === 'refuse' && message.reason, 'UNAVAILABLE');
    assert.match(message.type === 'refuse' ? message.message : '', /DATA_CORRUPTED|damaged data/);
    assert.ok((await metricValue(node.url, /^mercury_data_corruption_total /)) > before);
    assert.equal((await request(node.url, 'GET', '/healthz')).status, 200);
    assert.equal(node.child.exitCode, null, 'the upstream process is alive');
  });

  test('data corruption: a new replica bootstraps from the sound key space and becomes ready', async () => {
    const replica = await startServe(join(root, 'replica'), ['--upstream', node.replication]);
    try {
      await waitUntil('the replica is ready', async () => (await request(replica.url, 'GET', '/readyz')).status === 200);
      assert.equal((await request(replica.url, 'GET', '/v1/kv/b')).body.toString(), 'two');
    } finally {
      await stopProcess(replica.child);
    }
  });

  test('data corruption: the damage is logged, counted, shown in status, and fails readiness', async () => {
    assert.ok((await metricValue(node.url, /^mercury_data_corruption_total /)) >= 3);
    const status = await requestJson<{ storage: { sound: boolean; damageMet: number; damage: { what: string }[] } }>(node.url, 'GET', '/v1/status');
    assert.equal(status.storage.sound, false);
    assert.ok(status.storage.damageMet >= 3);
    assert.deepEqual(status.storage.damage.map((report) => report.what), ['log entry 2']);
    const ready = await request(node.url, 'GET', '/readyz');
    assert.equal(ready.status, 503);
    const body = JSON.parse(ready.body.toString()) as { ready: boolean; reasons: string[] };
    assert.equal(body.ready, false);
    assert.match(body.reasons.join('\n'), /^DATA_CORRUPTED: /m);
    assert.match(node.stderr(), /damaged data met while serving/);
    assert.equal((await request(node.url, 'GET', '/healthz')).status, 200);
  });
});
