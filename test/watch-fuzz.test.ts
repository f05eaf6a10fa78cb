/**
 * Fuzzing the watch WebSocket of a live node (src/watch/websocket.ts; close codes in src/api/watch.ts) after a valid
 * handshake: streams of client frames (subscribes valid and mutated, unsubscribes, pings, pongs, close frames, binary
 * frames, text that is not UTF-8, messages in fragments, lengths in their 16- and 64-bit forms, 64-bit lengths of any
 * size) are mutated (bytes flipped, inserted, deleted, the tail cut), split at random points and sent on raw TCP.
 *
 * Every frame from the node must be well-formed (unmasked, RSV clear, a known opcode), every text message JSON and
 * every error in it a code the protocol defines; the node closes only with a code the protocol defines, or echoes the
 * client's own, never 1011; nothing after its close frame; it logs no error; and afterwards it serves watches, and once
 * every connection is gone its watch connections, subscriptions and held bytes are back to zero. A failure prints the
 * shrunk stream and the MERCURY_TEST_SEED that reproduces it. MERCURY_FUZZ_RUNS raises the runs (default 60).
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { WatchCloseCode, WatchErrorCode } from '../src/api/index.js';
import { requestJson } from './support/http.js';
import { applyChanges, byteChange, splitPoints, fuzzRuns, fuzzNodeHooks, fuzzStreams, nodeMetric, sendStream } from './support/fuzz.js';
import { eventually } from './support/tree.js';
import { clientFrame, WatchClient } from './support/watch.js';

const RUNS = fuzzRuns(60);
/** A connection still open is judged once the node has sent nothing for this long. */
const QUIET_MS = 150;
const EXCHANGE_MS_MAX = 4_000;
const HANDSHAKE =
  'GET /v1/watch HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n';

const TEXT = 0x1;
const BINARY = 0x2;
const CLOSE = 0x8;
const PING = 0x9;
const PONG = 0xa;

/** Close codes the node sends of its own accord (src/api/watch.ts), 1011 left out: no input may cause it. */
const NODE_CLOSE_CODES = new Set<number>([1000, ...Object.values(WatchCloseCode).filter((code) => code !== WatchCloseCode.INTERNAL_ERROR), 1002]);
const ERROR_CODES = new Set<string>(Object.values(WatchErrorCode));

// --- Generators ---------------------------------------------------------------------------------------------------

const prefix = fc.oneof(fc.constantFrom('', 'fz/', 'fz/a', 'other/'), fc.string({ maxLength: 6 }));
const subscribeJson = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record(
      {
        type: fc.constant('subscribe'),
        id: fc.oneof(fc.nat(5), fc.constantFrom('a', 'b')),
        prefixes: fc.array(prefix, { minLength: 1, maxLength: 3 }),
        fromSeq: fc.nat(30),
        filters: fc.record({ puts: fc.boolean(), deletes: fc.boolean(), keysOnly: fc.boolean(), authors: fc.boolean() }, { requiredKeys: [] }),
      },
      { requiredKeys: ['type', 'id', 'prefixes'] },
    ),
  },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('unsubscribe'), id: fc.oneof(fc.nat(5), fc.constantFrom('a', 'b')) }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
);
/** A subscribe whose JSON text is itself mutated. */
const messageText = fc.oneof(
  { weight: 3, arbitrary: subscribeJson.map((value) => Buffer.from(JSON.stringify(value) ?? 'null')) },
  { weight: 1, arbitrary: fc.tuple(subscribeJson, fc.array(byteChange, { minLength: 1, maxLength: 3 })).map(([value, changes]) => applyChanges(Buffer.from(JSON.stringify(value) ?? 'null'), changes)) },
);
const mask = fc.oneof({ weight: 4, arbitrary: fc.constant(Buffer.from([0x12, 0x34, 0x56, 0x78])) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 4, maxLength: 4 }).map((bytes) => Buffer.from(bytes)) });
const lengthBytes = fc.constantFrom<0 | 2 | 8 | undefined>(undefined, undefined, undefined, 2, 8);

const clientFrames: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(messageText, mask, lengthBytes).map(([text, key, size]) => clientFrame(true, TEXT, text, key, text.length < 126 || size !== 0 ? size : undefined)) },
  // A message in fragments: a first frame, continuations, the last final (or not, left for the deadline).
  {
    weight: 2,
    arbitrary: fc.tuple(messageText, fc.array(fc.nat(), { minLength: 1, maxLength: 3 }), fc.boolean(), fc.array(fc.constant(clientFrame(true, PING, Buffer.from('p'))), { maxLength: 1 })).map(([text, cuts, last, pings]) => {
      const points = splitPoints(cuts, text.length);
      const pieces = [0, ...points].map((start, index) => text.subarray(start, [...points, text.length][index]));
      return Buffer.concat(pieces.flatMap((piece, index) => [clientFrame(last && index === pieces.length - 1, index === 0 ? TEXT : 0x0, piece), ...(index === 0 ? pings : [])]));
    }),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 125 }).map((payload) => clientFrame(true, PING, Buffer.from(payload))) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 20 }).map((payload) => clientFrame(true, PONG, Buffer.from(payload))) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.oneof(fc.constantFrom(1000, 1001, 1011, 3000, 4999, 1005, 999, 5000), fc.nat(0xffff)), fc.oneof(fc.string({ maxLength: 20 }).map((text) => Buffer.from(text)), fc.constant(Buffer.from([0xc3, 0x28]))))
      .map(([code, reason]) => {
        const payload = Buffer.alloc(2 + reason.length);
        payload.writeUInt16BE(code, 0);
        reason.copy(payload, 2);
        return clientFrame(true, CLOSE, payload.subarray(0, 125));
      }),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 20 }).map((payload) => clientFrame(true, BINARY, Buffer.from(payload))) },
  // Not UTF-8: a lone continuation byte, an overlong encoding, a surrogate, a cut sequence.
  { weight: 1, arbitrary: fc.constantFrom([0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82]).map((bytes) => clientFrame(true, TEXT, Buffer.from([0x7b, ...bytes, 0x7d]))) },
  // A 64-bit length of any size (beyond 2^53, beyond 2^63), with a few payload bytes.
  {
    weight: 1,
    arbitrary: fc.tuple(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.constantFrom(TEXT, BINARY, 0x0, PING)).map(([length, opcode]) => {
      const frame = clientFrame(true, opcode, Buffer.from('{}'), undefined, 8);
      frame.writeBigUInt64BE(length, 2);
      return frame;
    }),
  },
);

interface Stream {
  readonly bytes: Buffer;
  readonly splits: readonly number[];
}

const stream: fc.Arbitrary<Stream> = fc
  .record({
    frames: fc.array(clientFrames, { minLength: 1, maxLength: 5 }),
    mutated: fc.nat(2).map((n) => n > 0),
    changes: fc.array(byteChange, { maxLength: 3 }),
    splits: fc.array(fc.nat(), { maxLength: 4 }),
  })
  .map(({ frames, mutated, changes, splits }) => {
    const joined = Buffer.concat(frames);
    const bytes = mutated ? applyChanges(joined, changes) : joined;
    return { bytes, splits: splitPoints(splits, bytes.length) };
  });

// --- The exchange -------------------------------------------------------------------------------------------------

interface ServerFrame {
  readonly fin: boolean;
  readonly rsv: number;
  readonly masked: boolean;
  readonly opcode: number;
  readonly payload: Buffer;
}

/** The node's frames in `bytes`; `rest` is what is left after the last whole one. */
function serverFrames(bytes: Buffer): { frames: ServerFrame[]; rest: number } {
  const frames: ServerFrame[] = [];
  let at = 0;
  while (at + 2 <= bytes.length) {
    const length = bytes[at + 1]! & 0x7f;
    const header = length === 126 ? 4 : length === 127 ? 10 : 2;
    if (at + header > bytes.length) break;
    const payloadBytes = length === 126 ? bytes.readUInt16BE(at + 2) : length === 127 ? Number(bytes.readBigUInt64BE(at + 2)) : length;
    if (at + header + payloadBytes > bytes.length) break;
    frames.push({
      fin: (bytes[at]! & 0x80) !== 0,
      rsv: bytes[at]! & 0x70,
      masked: (bytes[at + 1]! & 0x80) !== 0,
      opcode: bytes[at]! & 0x0f,
      payload: bytes.subarray(at + header, at + header + payloadBytes),
    });
    at += header + payloadBytes;
  }
  return { frames, rest: bytes.length - at };
}

/** Close codes in the client's own close frames, as the node reads them (the node echoes a valid one). */
function clientCloseCodes(bytes: Buffer): Set<number> {
  const codes = new Set<number>();
  let at = 0;
  while (at + 2 <= bytes.length) {
    const length = bytes[at + 1]! & 0x7f;
    const header = (length === 126 ? 4 : length === 127 ? 10 : 2) + ((bytes[at + 1]! & 0x80) !== 0 ? 4 : 0);
    if (at + header > bytes.length) break;
    const payloadBytes = length === 126 ? bytes.readUInt16BE(at + 2) : length === 127 ? Number(bytes.readBigUInt64BE(at + 2)) : length;
    if (!Number.isSafeInteger(payloadBytes) || at + header + payloadBytes > bytes.length) break;
    if ((bytes[at]! & 0x0f) === CLOSE && payloadBytes >= 2) {
      const key = (bytes[at + 1]! & 0x80) !== 0 ? bytes.subarray(at + header - 4, at + header) : Buffer.alloc(4);
      codes.add(((bytes[at + header]! ^ key[0]!) << 8) | (bytes[at + header + 1]! ^ key[1]!));
    }
    at += header + payloadBytes;
  }
  return codes;
}

interface Exchange {
  readonly frames: ServerFrame[];
  readonly rest: number;
  readonly closed: boolean;
}

async function exchange(baseUrl: string, { bytes, splits }: Stream): Promise<Exchange> {
  const { hostname, port } = new URL(baseUrl);
  const chunks: Buffer[] = [];
  const received = (chunk: Buffer): boolean => chunks.push(chunk) > 0;
  const opening = async (socket: Socket, closed: () => boolean): Promise<void> => {
    socket.write(HANDSHAKE);
    const handshakeBy = Date.now() + 5_000;
    while (Buffer.concat(chunks).indexOf('\r\n\r\n') < 0) {
      assert.ok(Date.now() < handshakeBy && !closed(), 'no answer to the handshake');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.match(Buffer.concat(chunks).toString('latin1'), /^HTTP\/1\.1 101 /);
  };
  const closed = await sendStream({ host: hostname, port: Number(port), received, opening }, bytes, splits, QUIET_MS, EXCHANGE_MS_MAX);
  const all = Buffer.concat(chunks);
  return { ...serverFrames(all.subarray(all.indexOf('\r\n\r\n') + 4)), closed };
}

function check(input: Stream, { frames, rest, closed }: Exchange, count: (kind: string) => void): void {
  const what = `stream ${input.bytes.toString('hex').slice(0, 600)} split at ${JSON.stringify(input.splits)}`;
  if (closed) assert.equal(rest, 0, `${what}: the node closed part-way into a frame`);
  const echoes = clientCloseCodes(input.bytes);
  frames.forEach((frame, index) => {
    assert.ok(!frame.masked && frame.rsv === 0, `${what}: a frame masked or with RSV bits`);
    assert.ok([0x0, TEXT, CLOSE, PING, PONG].includes(frame.opcode), `${what}: a frame of opcode ${frame.opcode}`);
    if (frame.opcode === TEXT) {
      const message = JSON.parse(frame.payload.toString('utf8')) as { type: string; code?: string };
      if (message.type === 'error') {
        assert.ok(ERROR_CODES.has(message.code!), `${what}: an error with a code the protocol does not define: ${frame.payload.toString()}`);
        assert.notEqual(message.code, 'INTERNAL', `${what}: an internal error: ${frame.payload.toString()}`);
      }
      count(message.type === 'error' ? message.code! : message.type);
    }
    if (frame.opcode === CLOSE) {
      assert.equal(index, frames.length - 1, `${what}: frames after the close frame`);
      if (frame.payload.length === 0) return count('close (none)');
      const code = frame.payload.readUInt16BE(0);
      assert.ok(NODE_CLOSE_CODES.has(code) || echoes.has(code), `${what}: closed with ${code} (${frame.payload.subarray(2).toString()})`);
      count(`close ${code}`);
    }
  });
}

describe('watch fuzz', () => {
  const fuzzed = fuzzNodeHooks('watch-fuzz');

  test('watch fuzz: mutated and split frames after the handshake get well-formed frames, defined errors and close codes, never 1011', async (t) => {
    const kinds = await fuzzStreams(stream, (input) => exchange(fuzzed.node.url, input), check, RUNS);
    t.diagnostic(`answers: ${JSON.stringify([...kinds].sort())}`);
    assert.ok((kinds.get('subscribed') ?? 0) > 10, `too few subscriptions: ${JSON.stringify([...kinds])}`);
    assert.ok([...kinds.keys()].filter((kind) => kind.startsWith('close ')).length >= 4, `too few kinds of close: ${JSON.stringify([...kinds])}`);
  });

  test('watch fuzz: the node serves watches on, logged no error, and holds no connection, subscription or bytes', async () => {
    const client = await WatchClient.connect(fuzzed.node.url);
    await client.subscribe('after', ['fz/']);
    const { seq } = await requestJson<{ seq: number }>(fuzzed.node.url, 'PUT', '/v1/kv/fz/after', { body: 'still here' });
    await client.waitForSeq('after', seq);
    client.socket.close();
    await eventually(
      () => Promise.resolve(nodeMetric(fuzzed.node, 'mercury_watch_connections') === 0 && nodeMetric(fuzzed.node, 'mercury_watch_subscriptions') === 0 && nodeMetric(fuzzed.node, 'mercury_http_body_bytes_in_flight') === 0),
      () => `connections ${nodeMetric(fuzzed.node, 'mercury_watch_connections')}, subscriptions ${nodeMetric(fuzzed.node, 'mercury_watch_subscriptions')}, held bytes ${nodeMetric(fuzzed.node, 'mercury_http_body_bytes_in_flight')}`,
      10_000,
    );
    assert.deepEqual(fuzzed.errorLog, []);
  });
});
