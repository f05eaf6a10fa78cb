/**
 * Durability under kill -9: a real `mercury serve` process takes writes from 32 concurrent HTTP clients (single PUTs
 * and multi-key transactions) and 32 concurrent writers on its binary wire port (PUTs, many to a connection: the
 * benchmark's write path), as fast as they go, and is SIGKILLed in the middle of the load. Restarted on the same
 * directory, it must hold every write it acknowledged (each write uses a fresh key, so the check is exact: the value,
 * and a modSeq equal to the acknowledged seq) and its whole log must verify. Three cycles, on the same directory.
 */
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { connect, ServerError } from '../src/client/index.js';
import { auditLog, request, requestJson } from './support/http.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

const CLIENTS = 32;
/** Wire connections, and writers on each: the wire port answers many requests of one connection per turn. */
const WIRE_CONNECTIONS = 4;
const WIRE_WRITERS_PER_CONNECTION = 8;
const CYCLES = 3;
const LOAD_MS_MIN = 800;
const LOAD_MS_MAX = 1200;

interface Acknowledged {
  readonly value: string;
  readonly seq: number;
}

interface RangePageJson {
  items: { key: string; keyEncoding: string; value: string; valueEncoding: string; modSeq: number }[];
  cursor: string | null;
}

/**
 * One client: writes until the node stops answering. Every other request is a transaction of three puts. A write
 * counts as acknowledged only when its 200 response has fully arrived.
 */
async function client(url: string, agent: Agent, prefix: string, acknowledged: Map<string, Acknowledged>, counts: { puts: number; txns: number }): Promise<void> {
  for (let n = 0; ; n++) {
    try {
      if (n % 2 === 0) {
        const key = `${prefix}/p${n}`;
        const value = `${key}=${'x'.repeat(n % 64)}`;
        const response = await request(url, 'PUT', `/v1/kv/${key}`, { body: value, agent });
        if (response.status !== 200) throw new Error(`PUT answered ${response.status}: ${response.body.toString()}`);
        const { seq } = JSON.parse(response.body.toString()) as { seq: number };
        acknowledged.set(key, { value, seq });
        counts.puts++;
      } else {
        const keys = [0, 1, 2].map((i) => `${prefix}/t${n}.${i}`);
        const success = keys.map((key) => ({ op: 'put', key, value: `${key}!` }));
        const response = await request(url, 'POST', '/v1/txn', { body: JSON.stringify({ success }), headers: { 'content-type': 'application/json' }, agent });
        if (response.status !== 200) throw new Error(`txn answered ${response.status}: ${response.body.toString()}`);
        const { seq, succeeded } = JSON.parse(response.body.toString()) as { seq: number; succeeded: boolean };
        assert.equal(succeeded, true);
        for (const key of keys) acknowledged.set(key, { value: `${key}!`, seq });
        counts.txns++;
      }
    } catch (error) {
      // The kill: the connection is reset or refused. The write in flight was not acknowledged; this client is done.
      const code = (error as { code?: string }).code;
      if (code === 'ECONNRESET' || code === 'ECONNREFUSED' || code === 'EPIPE' || (error as Error).message === 'socket hang up') return;
      throw error;
    }
  }
}

/**
 * One writer on a wire connection: PUTs until the node is killed. The client makes one attempt per write, so a write
 * is never resent to the restarted node; one counts as acknowledged only when its answer arrived.
 */
async function wireWriter(
  wire: ReturnType<typeof connect>,
  prefix: string,
  acknowledged: Map<string, Acknowledged>,
  counts: { wire: number },
  killed: { value: boolean },
): Promise<void> {
  for (let n = 0; ; n += 2) {
    const key = `${prefix}/p${n}`;
    const value = `${key}=${'w'.repeat(n % 64)}`;
    try {
      const { seq } = await wire.put(key, value);
      acknowledged.set(key, { value, seq });
      counts.wire++;
    } catch (error) {
      // After the kill the write in flight has no answer (or the connection is refused): this writer is done. An
      // answer that is an error, or a failure before the kill, is a real failure.
      if (killed.value && !(error instanceof ServerError)) return;
      throw error;
    }
  }
}

/** Every key under `prefix` with its value and modSeq, page by page. */
async function readAll(url: string, prefix: string): Promise<Map<string, Acknowledged>> {
  const found = new Map<string, Acknowledged>();
  let cursor: string | null = null;
  do {
    const page: RangePageJson = await requestJson<RangePageJson>(url, 'GET', `/v1/kv?prefix=${prefix}&limit=10000${cursor === null ? '' : `&cursor=${cursor}`}`);
    for (const item of page.items) found.set(Buffer.from(item.key, item.keyEncoding as BufferEncoding).toString(), { value: Buffer.from(item.value, item.valueEncoding as BufferEncoding).toString(), seq: item.modSeq });
    cursor = page.cursor;
  } while (cursor !== null);
  return found;
}

describe('crash recovery', () => {
  let dir: string;
  let node: ServeProcess | undefined;
  const acknowledged = new Map<string, Acknowledged>();

  before(() => {
    dir = makeTempDir('crash');
  });

  after(async () => {
    if (node !== undefined) await stopProcess(node.child);
    removeDir(dir);
  });

  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    test(`crash recovery: cycle ${cycle}: every acknowledged write survives kill -9 mid-load and the log verifies`, async (t) => {
      node ??= await startServe(dir);
      const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS });
      const counts = { puts: 0, txns: 0, wire: 0 };
      const killed = { value: false };
      const maxAckedBefore = Math.max(0, ...Array.from(acknowledged.values(), (ack) => ack.seq));
      const clients = Array.from({ length: CLIENTS }, (_, i) => client(node!.url, agent, `c${cycle}/w${i}`, acknowledged, counts));
      const wires = Array.from({ length: WIRE_CONNECTIONS }, () => connect(node!.wire, { attemptsMax: 1 }));
      wires.forEach((wire, c) => {
        for (let i = 0; i < WIRE_WRITERS_PER_CONNECTION; i++)
          clients.push(wireWriter(wire, `c${cycle}/w${CLIENTS + c * WIRE_WRITERS_PER_CONNECTION + i}`, acknowledged, counts, killed));
      });
      await new Promise((resolve) => setTimeout(resolve, LOAD_MS_MIN + Math.random() * (LOAD_MS_MAX - LOAD_MS_MIN)));
      // On a loaded machine the node may have answered little in that time: the kill must come mid-load, so wait
      // (on the condition, not longer sleeps) until more writes than clients were acknowledged.
      while (counts.puts + counts.txns <= CLIENTS || counts.wire <= WIRE_CONNECTIONS * WIRE_WRITERS_PER_CONNECTION)
        await new Promise((resolve) => setTimeout(resolve, 10));
      const victim = node;
      node = undefined;
      killed.value = true;
      await stopProcess(victim.child, 'SIGKILL');
      await Promise.all(clients);
      agent.destroy();
      for (const wire of wires) wire.close();
      t.diagnostic(`cycle ${cycle}: ${counts.puts} puts, ${counts.txns} transactions and ${counts.wire} wire puts acknowledged before the kill`);
      assert.ok(counts.puts + counts.txns > CLIENTS, 'the HTTP load was running when the node was killed');
      assert.ok(counts.wire > WIRE_CONNECTIONS * WIRE_WRITERS_PER_CONNECTION, 'the wire load was running when the node was killed');

      node = await startServe(dir);
      const status = await requestJson<{ seq: number }>(node.url, 'GET', '/v1/status');
      const maxAcked = Math.max(0, ...Array.from(acknowledged.values(), (ack) => ack.seq));
      assert.ok(maxAcked > maxAckedBefore);
      assert.ok(status.seq >= maxAcked, `restarted at seq ${status.seq}, but seq ${maxAcked} was acknowledged`);

      // Every write of every cycle so far, exactly.
      for (let past = 1; past <= cycle; past++) {
        const found = await readAll(node.url, `c${past}/`);
        let checked = 0;
        for (const [key, ack] of acknowledged) {
          if (!key.startsWith(`c${past}/`)) continue;
          const stored = found.get(key);
          assert.ok(stored !== undefined, `acknowledged key ${key} (seq ${ack.seq}) is missing after the crash`);
          assert.equal(stored.value, ack.value, key);
          assert.equal(stored.seq, ack.seq, `${key}: modSeq ${stored.seq}, acknowledged at seq ${ack.seq}`);
          checked++;
        }
        // Writes that committed but whose answer was lost in the kill may be present too, nothing else; and a
        // transaction is all or nothing, acknowledged or not.
        const transactions = new Map<string, number>();
        for (const key of found.keys()) {
          const match = new RegExp(`^(c${past}/w\\d+/)(p\\d+|t\\d+)(\\.[012])?$`).exec(key);
          assert.ok(match !== null, `unexpected key ${key}`);
          if (match[3] !== undefined) transactions.set(match[1]! + match[2]!, (transactions.get(match[1]! + match[2]!) ?? 0) + 1);
        }
        for (const [txn, keys] of transactions) assert.equal(keys, 3, `transaction ${txn} is partly applied`);
        assert.ok(found.size >= checked);
      }

      const entries = await auditLog(node.url);
      assert.equal(entries.length, status.seq, 'the log holds every entry from seq 1');
      assert.equal((await request(node.url, 'GET', '/healthz')).status, 200);
    });
  }
});
