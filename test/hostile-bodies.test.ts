/**
 * Hostile input - request bodies. Found on a real node: one 66 MB `POST /v1/txn` of nested arrays blocked the event
 * loop for 24 s and took RSS to 2.1 GB; 48 MB of `[]` blocked it for 10 s before the 413; six held 60 MiB bodies
 * added 364 MiB for up to 60 s; invalid UTF-8 and lone surrogates were committed as U+FFFD. Now a body is checked as
 * it arrives (src/api/json-validator.ts) and refused after a bounded prefix, bodies in flight share one budget
 * (`http.bodyBytesInFlightMax`), and text that is not Unicode is refused. Each attack runs on a real `mercury serve`
 * process (production limits), with `/healthz` probed and the node's RSS sampled while it runs.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test, type TestContext } from 'node:test';
import { ERROR_STATUS } from '../src/errors/index.js';
import { JSON_NAME_BYTES_MAX, TXN_JSON_ELEMENTS_MAX } from '../src/api/index.js';
import { BODY_BYTES_IN_FLIGHT_MAX, BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX } from '../src/limits.js';
import { metricValue, request, type RawResponse } from './support/http.js';
import { assertHealthzAnswers, rssBytes, sampleResident, streamBody } from './support/hostile.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { eventually } from './support/tree.js';

const MiB = 1024 * 1024;
const CHUNK_BYTES = 64 * 1024;
/**
 * What a refused body may add to the node's RSS: the chunks read before the refusal, node:http's buffers, the error
 * answer and heap growth under a probe (measured: a few MiB). Before, the nested-array body took RSS to 2.1 GB.
 */
const REFUSED_BODY_RSS_BYTES_MAX = 64 * MiB;
/**
 * Bytes a refused body may have sent before its answer: what the node read before refusing (one chunk, or the element
 * limit's worth of `[],`) plus what the loopback socket buffers hold once the node stops reading.
 */
const REFUSED_BODY_SENT_BYTES_MAX = 3 * TXN_JSON_ELEMENTS_MAX + 16 * MiB;
const HELD_BODY_BYTES = 60 * MiB;
const HELD_BODIES = 6;

function errorOf(answer: RawResponse | undefined): { code: string; message: string; limit?: number } {
  assert.ok(answer !== undefined, 'the node closed the connection without an answer');
  return (JSON.parse(answer.body) as { error: { code: string; message: string; limit?: number } }).error;
}

function txnHead(baseUrl: string, contentLength: number): string {
  return `POST /v1/txn HTTP/1.1\r\nHost: ${new URL(baseUrl).host}\r\nContent-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n`;
}

describe('hostile input - request bodies', () => {
  const dir = makeTempDir('hostile-bodies');
  let node: ServeProcess;
  const acknowledged = new Map<string, string>();
  before(async () => {
    node = await startServe(join(dir, 'node'));
    for (let i = 0; i < 20; i++) {
      const response = await request(node.url, 'PUT', `/v1/kv/acked-${i}`, { body: `value-${i}` });
      assert.equal(response.status, 200);
      acknowledged.set(`acked-${i}`, `value-${i}`);
    }
  });
  after(async () => {
    await stopProcess(node.child);
    removeDir(dir);
  });

  async function headSeq(): Promise<number> {
    return (JSON.parse((await request(node.url, 'GET', '/healthz')).body.toString()) as { seq: number }).seq;
  }

  async function assertAcknowledgedIntact(): Promise<void> {
    for (const [key, value] of acknowledged) assert.equal((await request(node.url, 'GET', `/v1/kv/${key}`)).body.toString(), value, key);
  }

  /** Streams a hostile body, probes /healthz while it is sent, and returns the answer, bytes sent and RSS growth. */
  async function attack(
    t: TestContext,
    what: string,
    prefix: string,
    chunk: Buffer,
    totalBytes: number,
  ): Promise<{ answer: RawResponse | undefined; sent: number; rssGrowth: number }> {
    const rssBefore = rssBytes(node.child.pid);
    const sampler = sampleResident(node.child.pid!);
    const started = performance.now();
    const body = streamBody(node.url, txnHead(node.url, totalBytes), Buffer.from(prefix), chunk, totalBytes);
    let healthzMs, answer, answerMs;
    try {
      healthzMs = await assertHealthzAnswers(node.url, what, node.child.pid);
      answer = await body.answer;
      answerMs = performance.now() - started;
    } finally {
      // Also when an assertion fails: a sampler left running keeps the test process alive after the run.
      body.destroy();
      sampler.stop();
    }
    const rssGrowth = sampler.stop() - rssBefore;
    t.diagnostic(`${what}: answered ${answer?.status} in ${answerMs.toFixed(0)} ms after ${body.bytesSent()} bytes sent; /healthz ${healthzMs.toFixed(1)} ms; RSS +${(rssGrowth / MiB).toFixed(1)} MiB`);
    return { answer, sent: body.bytesSent(), rssGrowth };
  }

  test('bodies: 66 MB of nested arrays is refused with JSON_TOO_DEEP after a bounded prefix', async (t) => {
    const { answer, sent, rssGrowth } = await attack(t, '66 MB of "["', '', Buffer.alloc(CHUNK_BYTES, '['), 66_000_000);
    const error = errorOf(answer);
    assert.equal(answer!.status, ERROR_STATUS.JSON_TOO_DEEP);
    assert.equal(error.code, 'JSON_TOO_DEEP');
    assert.ok(sent <= REFUSED_BODY_SENT_BYTES_MAX, `${sent} bytes sent before the answer`);
    assert.ok(rssGrowth <= REFUSED_BODY_RSS_BYTES_MAX, `RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB`);
    await assertAcknowledgedIntact();
  });

  test('bodies: 48 MB of [] in a transaction is refused with JSON_TOO_MANY_ELEMENTS after a bounded prefix', async (t) => {
    const { answer, sent, rssGrowth } = await attack(t, '48 MB of "[],"', '{"success":[', Buffer.from('[],'.repeat(CHUNK_BYTES / 4)), 48_000_000);
    const error = errorOf(answer);
    assert.equal(answer!.status, 413);
    assert.equal(error.code, 'JSON_TOO_MANY_ELEMENTS');
    assert.equal(error.limit, TXN_JSON_ELEMENTS_MAX);
    assert.ok(sent <= REFUSED_BODY_SENT_BYTES_MAX, `${sent} bytes sent before the answer`);
    assert.ok(rssGrowth <= REFUSED_BODY_RSS_BYTES_MAX, `RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB`);
    await assertAcknowledgedIntact();
  });

  test('bodies: a transaction whose member name is 8 MB of \\u0061 escapes is refused at the name limit, not gathered', async (t) => {
    // Audit 2026-12-06: the validator kept each byte of an escape in a member name as a Buffer view of its own; one
    // such body (8 MB, within the string and body limits) took the node from 56 MiB to 1 GiB, five at once killed it
    // (JavaScript heap out of memory). Any token with a read or write scope could send it.
    const escape = '\\u0061';
    const chunk = Buffer.from(escape.repeat(Math.floor(CHUNK_BYTES / escape.length)));
    const { answer, sent, rssGrowth } = await attack(t, '8 MB of \\u0061 in a member name', '{"', chunk, 2 + 1_398_000 * escape.length);
    const error = errorOf(answer);
    assert.equal(answer!.status, 400);
    assert.equal(error.code, 'INVALID_ARGUMENT');
    // The escape that takes the name past JSON_NAME_BYTES_MAX decoded bytes ends at this byte.
    assert.match(error.message, new RegExp(`longer than ${JSON_NAME_BYTES_MAX} bytes.*refused at byte ${2 + (JSON_NAME_BYTES_MAX + 1) * escape.length - 1}\\)`));
    assert.equal(error.limit, JSON_NAME_BYTES_MAX);
    assert.ok(sent <= REFUSED_BODY_SENT_BYTES_MAX, `${sent} bytes sent before the answer`);
    assert.ok(rssGrowth <= REFUSED_BODY_RSS_BYTES_MAX, `RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB`);
    await assertAcknowledgedIntact();
  });

  test('bodies: six held 60 MiB bodies: those beyond the in-flight budget are refused at once with 503 and Retry-After', async (t) => {
    // All from one host: its share of the budget (record 81) is what admits them, within the node's.
    assert.ok(BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX <= BODY_BYTES_IN_FLIGHT_MAX);
    const admittedMax = Math.floor(BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX / HELD_BODY_BYTES);
    assert.ok(admittedMax < HELD_BODIES, 'the attack must exceed the budget');
    const rssBefore = rssBytes(node.child.pid);
    const sampler = sampleResident(node.child.pid!);
    // Each declares 60 MiB and sends all but the last byte, then holds the request open.
    const chunk = Buffer.alloc(CHUNK_BYTES, ' ');
    const bodies = [];
    for (let i = 0; i < HELD_BODIES; i++) bodies.push(streamBody(node.url, txnHead(node.url, HELD_BODY_BYTES), Buffer.from('{"success":[]}'), chunk, HELD_BODY_BYTES, HELD_BODY_BYTES - 1));
    try {
      await Promise.all(bodies.map((body) => body.holding));
      const refused = await Promise.all(
        bodies.map(async (body) => {
          // A refused body is answered before it is read; a held one has no answer while it is held.
          const settled = await Promise.race([body.answer, new Promise<'held'>((resolve) => setTimeout(() => resolve('held'), 200))]);
          return settled === 'held' ? undefined : settled;
        }),
      );
      const answers = refused.filter((answer) => answer !== undefined);
      assert.equal(answers.length, HELD_BODIES - admittedMax, `${answers.length} of ${HELD_BODIES} refused`);
      for (const answer of answers) {
        assert.equal(answer.status, 503);
        assert.equal(errorOf(answer).code, 'BODY_BUDGET_EXCEEDED');
        assert.equal(answer.headers['retry-after'], '1');
      }
      assert.equal(await metricValue(node.url, /^mercury_http_body_bytes_in_flight /), admittedMax * HELD_BODY_BYTES);
      // While they are held: the node answers, and small writes still fit beside them.
      await assertHealthzAnswers(node.url, `with ${admittedMax} bodies of 60 MiB held`, node.child.pid);
      const put = await request(node.url, 'PUT', '/v1/kv/during-held', { body: 'small' });
      assert.equal(put.status, 200, put.body.toString());
      acknowledged.set('during-held', 'small');
      const rssGrowth = sampler.stop() - rssBefore;
      t.diagnostic(`${HELD_BODIES} held bodies of 60 MiB: ${answers.length} refused, RSS +${(rssGrowth / MiB).toFixed(1)} MiB`);
      const bound = admittedMax * HELD_BODY_BYTES + REFUSED_BODY_RSS_BYTES_MAX;
      assert.ok(rssGrowth <= bound, `RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB; bound ${(bound / MiB).toFixed(0)} MiB`);
    } finally {
      for (const body of bodies) body.destroy();
      sampler.stop();
    }
    // Once the held requests are gone, their reservations are released.
    await eventually(
      async () => (await metricValue(node.url, /^mercury_http_body_bytes_in_flight /)) === 0,
      async () => `in flight: ${await metricValue(node.url, /^mercury_http_body_bytes_in_flight /)}`,
    );
    await assertAcknowledgedIntact();
  });

  test('bodies: invalid UTF-8 and lone surrogates in a transaction are refused, not committed as U+FFFD', async () => {
    const seqBefore = await headSeq();
    const cases: [Buffer, string][] = [
      [Buffer.concat([Buffer.from('{"success":[{"op":"put","key":"bad-utf8","value":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}]}')]), 'INVALID_UTF8'],
      [Buffer.concat([Buffer.from('{"success":[{"op":"put","key":"bad-utf8","value":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}]}')]), 'INVALID_UTF8'],
      [Buffer.from('{"success":[{"op":"put","key":"bad-surrogate","value":"\\ud800"}]}'), 'LONE_SURROGATE'],
      [Buffer.from('{"success":[{"op":"put","key":"bad-\\udc00","value":"x"}]}'), 'LONE_SURROGATE'],
    ];
    for (const [body, code] of cases) {
      const response = await request(node.url, 'POST', '/v1/txn', { body, headers: { 'content-type': 'application/json' } });
      assert.equal(response.status, 400, response.body.toString());
      assert.equal((JSON.parse(response.body.toString()) as { error: { code: string } }).error.code, code);
    }
    // A proper pair is text like any other.
    const pair = await request(node.url, 'POST', '/v1/txn', { body: '{"success":[{"op":"put","key":"emoji","value":"\\ud83d\\ude00"}]}', headers: { 'content-type': 'application/json' } });
    assert.equal(pair.status, 200);
    assert.equal((await request(node.url, 'GET', '/v1/kv/emoji')).body.toString(), '\u{1f600}');
    acknowledged.set('emoji', '\u{1f600}');
    assert.equal(await headSeq(), seqBefore + 1, 'only the valid transaction was committed');
    for (const key of ['bad-utf8', 'bad-surrogate']) assert.equal((await request(node.url, 'GET', `/v1/kv/${key}`)).status, 404);
  });
});
