/**
 * Fuzzing the wire port of a live node (frames: src/api/wire.ts; node side: src/wire/) as test/http-fuzz.test.ts fuzzes
 * HTTP: valid streams of HELLO then GET, PUT and DELETE (ids reused, large PUTs judged from their head, reads waiting
 * on minSeq) are mutated (bytes flipped, inserted, deleted, the tail cut, a length field announcing another length),
 * split at random points and sent on raw TCP sockets.
 *
 * Every answer must be a well-formed node frame; an ERROR carries a code the API defines, never INTERNAL; a connection
 * the node closes ends with an ERROR of id 0 naming the fault (or GOAWAY); the node logs no error; and afterwards it
 * serves, its chain verifies, and once every connection is gone its sockets, unsent answers and body budget are back
 * to zero. A failure prints the shrunk stream and the MERCURY_TEST_SEED that reproduces it (test/support/seed.ts).
 * MERCURY_FUZZ_RUNS raises the number of runs (default 40 per suite, each of one to four streams at once).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { WireFrameReader, WireFrameType, decodeAnswer, encodeDelete, encodeGet, encodeHello, encodePut, type WireAnswer } from '../src/api/index.js';
import { connect } from '../src/index.js';
import { NODE_LIMITS_TEST } from '../src/node/index.js';
import { auditLog, KNOWN_CODES, requestJson } from './support/http.js';
import { applyChanges, byteChange, splitPoints, type ByteChange, fuzzRuns, fuzzNodeHooks, fuzzStreams, nodeMetric, sendStream } from './support/fuzz.js';
import { eventually } from './support/tree.js';

const RUNS = fuzzRuns(40);
/** A stream whose connection stays open is judged once the node has sent nothing for this long. */
const QUIET_MS = 150;
/** The most one stream is given (test limits: a partial frame times out after 500 ms, HELLO after 500 ms). */
const EXCHANGE_MS_MAX = 4_000;
const VALUE_BYTES_MAX = NODE_LIMITS_TEST.commit.valueBytesMax;

// --- Generators ---------------------------------------------------------------------------------------------------

const id = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constantFrom(0, 0xffff_ffff) }, { weight: 1, arbitrary: fc.nat() });
const key = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 9 }).map((i) => Buffer.from(`fz/${String.fromCharCode(97 + i)}`)) },
  { weight: 1, arbitrary: fc.constantFrom(Buffer.alloc(0), Buffer.alloc(1025, 0x6b), Buffer.from([0xff, 0x00, 0xfe])) },
);
const seq = fc.oneof(fc.nat(40), fc.constant(Number.MAX_SAFE_INTEGER));
const value = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 32 }).map((bytes) => Buffer.from(bytes)) },
  // Past the largest GET: judged from its head, reserved in the body budget before it is gathered.
  { weight: 1, arbitrary: fc.integer({ min: 1100, max: VALUE_BYTES_MAX + 8 }).map((length) => Buffer.alloc(length, 0x76)) },
);
const requestFrame = fc.oneof(
  fc.tuple(id, key).map(([i, k]) => encodeGet(i, k)),
  // Mostly short waits: a read waiting on a seq beyond the head is answered SEQ_WAIT_TIMEOUT, or aborted at the close.
  fc.tuple(id, key, seq, fc.oneof(fc.nat(200), fc.constant(70_000))).map(([i, k, s, timeoutMs]) => encodeGet(i, k, { seq: s, timeoutMs })),
  fc.tuple(id, key, value, fc.option(seq, { nil: undefined })).map(([i, k, v, ifModSeq]) => encodePut(i, k, v, ifModSeq)),
  fc.tuple(id, key, fc.option(seq, { nil: undefined })).map(([i, k, ifModSeq]) => encodeDelete(i, k, ifModSeq)),
);

/** A change to one frame before the stream is joined: its length field says another length. */
const lengthChange = fc.record({ frame: fc.nat(), length: fc.oneof(fc.integer({ min: -6, max: 6 }), fc.constantFrom(0, 4, 0xffff_ffff, 0x7fff_ffff), fc.nat(70_000)) });

interface Stream {
  readonly bytes: Buffer;
  /** Where the stream is cut into the writes that carry it. */
  readonly splits: readonly number[];
}

function mutate(frames: readonly Buffer[], lengths: readonly { frame: number; length: number }[], changes: readonly ByteChange[]): Buffer {
  const copies = frames.map((frame) => Buffer.from(frame));
  for (const { frame, length } of lengths) {
    const target = copies[frame % copies.length]!;
    // A small number is an error in the length a frame announces, anything else a length of its own.
    const announced = Math.abs(length) <= 6 ? target.readUInt32BE(0) + length : length;
    target.writeUInt32BE(Math.max(0, Math.min(0xffff_ffff, announced)), 0);
  }
  return applyChanges(Buffer.concat(copies), changes);
}

/** Streams that open with one of these HELLOs. */
const streamsAfter = (hello: fc.Arbitrary<Buffer>): fc.Arbitrary<Stream> =>
  fc
    .record({
      hello,
      requests: fc.array(requestFrame, { minLength: 1, maxLength: 6 }),
      // A third of the streams are sent as they are: the node must then answer every request.
      mutated: fc.nat(2).map((n) => n > 0),
      lengths: fc.array(lengthChange, { maxLength: 2 }),
      changes: fc.array(byteChange, { maxLength: 3 }),
      splits: fc.array(fc.nat(), { maxLength: 4 }),
    })
    .map(({ hello: first, requests, mutated, lengths, changes, splits }) => {
      const frames = [first, ...requests];
      const bytes = mutated && lengths.length + changes.length > 0 ? mutate(frames, lengths, changes) : Buffer.concat(frames);
      return { bytes, splits: splitPoints(splits, bytes.length) };
    });

// --- The exchange -------------------------------------------------------------------------------------------------

interface Exchange {
  readonly answers: WireAnswer[];
  /** The node closed the connection (else it was open when the node fell quiet). */
  readonly closed: boolean;
  /** Bytes after the last whole frame, or a frame that does not decode. */
  readonly garbage: string | undefined;
}

/** Sends the stream in its pieces (each its own write, a turn apart), then reads until the node closes or falls quiet. */
async function exchange(address: string, { bytes, splits }: Stream): Promise<Exchange> {
  const { hostname, port } = new URL(address);
  const reader = new WireFrameReader(64 * 1024 * 1024);
  const answers: WireAnswer[] = [];
  let garbage: string | undefined;
  const received = (chunk: Buffer): boolean => {
    reader.push(chunk);
    try {
      for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
        if (!('body' in frame)) throw new Error(`a frame of ${frame.length} bytes`);
        answers.push(decodeAnswer({ type: frame.type, id: frame.id, body: Buffer.from(frame.body) }));
      }
    } catch (error) {
      garbage ??= (error as Error).message;
    }
    return true;
  };
  const closed = await sendStream({ host: hostname, port: Number(port), received }, bytes, splits, QUIET_MS, EXCHANGE_MS_MAX);
  if (closed && reader.partialBytes > 0) garbage ??= `${reader.partialBytes} bytes of an unfinished frame before the close`;
  return { answers, closed, garbage };
}

const NODE_FRAMES = new Set<number>([WireFrameType.READY, WireFrameType.VALUE, WireFrameType.MISSING, WireFrameType.WRITTEN, WireFrameType.ERROR, WireFrameType.GOAWAY]);

function errorOf(answer: WireAnswer, what: string): { code: string; message: string } {
  assert.equal(answer.type, WireFrameType.ERROR);
  let parsed: { error?: { code?: unknown; message?: unknown } };
  try {
    parsed = JSON.parse((answer as { json: string }).json) as typeof parsed;
  } catch {
    assert.fail(`${what}: an ERROR frame that is not JSON: ${(answer as { json: string }).json}`);
  }
  const code = parsed.error?.code;
  const message = parsed.error?.message;
  assert.ok(typeof code === 'string' && KNOWN_CODES.has(code), `${what}: an ERROR with a code the API does not define: ${JSON.stringify(parsed)}`);
  assert.notEqual(code, 'INTERNAL', `${what}: the stream caused an internal error: ${JSON.stringify(parsed)}`);
  assert.ok(typeof message === 'string' && message.length > 0, `${what}: an ERROR without a message`);
  return { code, message };
}

/** The answers to one stream: node frames only, defined codes, READY first, and a close explained by its last frame. */
function check(input: Stream, { answers, closed, garbage }: Exchange, count: (kind: string) => void): void {
  const what = `stream ${input.bytes.toString('hex').slice(0, 600)} split at ${JSON.stringify(input.splits)}`;
  assert.equal(garbage, undefined, `${what}: the node sent bytes that are not its frames: ${garbage}`);
  answers.forEach((answer, index) => {
    assert.ok(NODE_FRAMES.has(answer.type), `${what}: answer of type 0x${answer.type.toString(16)}`);
    if (answer.type === WireFrameType.READY) assert.equal(index, 0, `${what}: READY after other frames`);
    if (answer.type === WireFrameType.ERROR) count(errorOf(answer, what).code + (answer.id === 0 ? ' (connection)' : ''));
    else count(answer.type.toString(16));
    const final = answer.id === 0 && answer.type !== WireFrameType.READY;
    if (final) assert.equal(index, answers.length - 1, `${what}: frames after the connection's ERROR or GOAWAY: ${JSON.stringify(answers.slice(index))}`);
  });
  if (closed) {
    const last = answers.at(-1);
    assert.ok(last !== undefined && last.id === 0 && last.type !== WireFrameType.READY, `${what}: closed without an ERROR saying why; answers ${JSON.stringify(answers)}`);
  }
}

/**
 * The fuzz, then the checks afterwards, on a node with auth off or required. With auth required the HELLOs carry the
 * admin's token, a reader's of fz/, a writer's of fz/a alone, an unknown one or none.
 */
function fuzzSuite(name: string, auth: 'off' | 'required'): void {
  const fuzzed = fuzzNodeHooks(name, auth);

  const hellos = async (): Promise<fc.Arbitrary<Buffer>> => {
    if (auth === 'off') return fc.oneof({ weight: 5, arbitrary: fc.constant(encodeHello(undefined)) }, { weight: 1, arbitrary: fc.constant(encodeHello('mcy_not_a_real_token')) });
    const create = async (tokenName: string, scopes: string[]): Promise<string> =>
      (
        await requestJson<{ token: string }>(fuzzed.node.url, 'POST', '/v1/auth/tokens', {
          headers: { authorization: `Bearer ${fuzzed.adminToken}` },
          body: JSON.stringify({ name: tokenName, scopes }),
        })
      ).token;
    const tokens = [fuzzed.adminToken!, await create('fz-reader', ['read:fz/']), await create('fz-writer', ['read:fz/', 'write:fz/a'])];
    return fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...tokens).map((token) => encodeHello(token)) }, { weight: 1, arbitrary: fc.constantFrom(undefined, 'mcy_not_a_real_token').map((token) => encodeHello(token)) });
  };

  test(`${name}: mutated and split frame streams get well-formed answers with defined codes, and a broken stream an ERROR before the close`, async (t) => {
    const stream = streamsAfter(await hellos());
    const kinds = await fuzzStreams(stream, (input) => exchange(fuzzed.node.wireUrl, input), check, RUNS);
    t.diagnostic(`answers: ${JSON.stringify([...kinds].sort())}`);
    // The generators must reach both sides: answers to requests, and a spread of refusals. How many requests are
    // answered varies with the seed and the machine's load (with auth, two CPU-bound processes beside it left 13 of
    // VALUE, MISSING and WRITTEN in 40 runs, against 31-40 when quiet): the floor says the side is reached, no more.
    const answered = (kinds.get('82') ?? 0) + (kinds.get('83') ?? 0) + (kinds.get('84') ?? 0);
    assert.ok(answered >= 5, `too few answers to requests: ${JSON.stringify([...kinds])}`);
    assert.ok([...kinds.keys()].filter((kind) => /^[A-Z]/.test(kind)).length >= 4, `too few kinds of errors: ${JSON.stringify([...kinds])}`);
  });

  test(`${name}: the node serves on with a valid chain, logged no error, and holds no connection, answer or body bytes`, async () => {
    const client = connect(fuzzed.node.wireUrl, { token: fuzzed.adminToken });
    const written = await client.put('fz/after', 'still here');
    assert.equal((await client.get('fz/after'))?.value.toString(), 'still here');
    assert.ok(written.seq > 10);
    client.close();
    // With auth the entries record their authors, which auditLog reseals with them; /v1/log needs the admin's token.
    await auditLog(fuzzed.node.url, 1000, auth === 'off' ? {} : { headers: { authorization: `Bearer ${fuzzed.adminToken}` } });
    await eventually(
      () => Promise.resolve(nodeMetric(fuzzed.node, 'mercury_wire_connections') === 0 && nodeMetric(fuzzed.node, 'mercury_wire_output_bytes') === 0 && nodeMetric(fuzzed.node, 'mercury_http_body_bytes_in_flight') === 0),
      () => `connections ${nodeMetric(fuzzed.node, 'mercury_wire_connections')}, output bytes ${nodeMetric(fuzzed.node, 'mercury_wire_output_bytes')}, body bytes ${nodeMetric(fuzzed.node, 'mercury_http_body_bytes_in_flight')}`,
      10_000,
    );
    assert.deepEqual(fuzzed.errorLog, []);
  });
}

describe('wire fuzz', () => fuzzSuite('wire fuzz', 'off'));

// With tokens: HELLO's authentication, scopes checked per request, and a large PUT refused from its head when its
// token may write nothing (PERMISSION_DENIED) before it holds the body budget.
describe('wire fuzz with auth', () => fuzzSuite('wire fuzz auth', 'required'));
