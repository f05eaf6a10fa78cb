/**
 * Fuzzing the replication port of a live root from the child's side (src/replication/protocol.ts, server.ts): a fake
 * child sends a valid HELLO (a new replica, or one at the root's head) and ACKs, mutated (bytes flipped, inserted,
 * deleted, the tail cut) and split at random points, on raw TCP.
 *
 * Every frame the root sends must decode (CRC and layout); a REFUSE carries a reason the protocol defines; nothing
 * follows a REFUSE; the root logs no error; and afterwards a child with a valid HELLO is welcomed, the chain verifies,
 * and once every connection is gone the root counts no child. A failure prints the shrunk stream and the
 * MERCURY_TEST_SEED that reproduces it. MERCURY_FUZZ_RUNS raises the runs (default 60, each of one to four children).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { GENESIS_HASH } from '../src/log/index.js';
import { FrameDecoder, PATH_NODES_MAX, PROTOCOL_VERSION, RefuseReason, decodeMessage, encodeMessage, type Message } from '../src/replication/index.js';
import { auditLog } from './support/http.js';
import { applyChanges, byteChange, splitPoints, fuzzRuns, fuzzNodeHooks, fuzzStreams, nodeMetric, sendStream } from './support/fuzz.js';
import { eventually } from './support/tree.js';

const RUNS = fuzzRuns(60);
const QUIET_MS = 150;
const EXCHANGE_MS_MAX = 4_000;
const REASONS = new Set<string>(Object.keys(RefuseReason));

interface Stream {
  readonly bytes: Buffer;
  readonly splits: readonly number[];
}

interface Exchange {
  readonly messages: Message[];
  /** Why the root's bytes did not decode, if they did not. */
  readonly garbage: string | undefined;
  readonly closed: boolean;
}

async function exchange(address: string, { bytes, splits }: Stream): Promise<Exchange> {
  const at = address.lastIndexOf(':');
  const decoder = new FrameDecoder(64 * 1024 * 1024);
  const messages: Message[] = [];
  let garbage: string | undefined;
  const received = (chunk: Buffer): boolean => {
    if (garbage !== undefined) return true;
    try {
      return decoder.push(chunk).some((frame) => {
        const message = decodeMessage(frame);
        messages.push(message);
        // A welcomed child hears heartbeats for as long as it stays: the exchange is over once the rest has come.
        return message.type !== 'heartbeat';
      });
    } catch (error) {
      garbage = (error as Error).message;
      return true;
    }
  };
  const closed = await sendStream({ host: address.slice(0, at), port: Number(address.slice(at + 1)), received }, bytes, splits, QUIET_MS, EXCHANGE_MS_MAX);
  if (closed && decoder.bufferedBytes > 0) garbage ??= `${decoder.bufferedBytes} bytes of an unfinished frame before the close`;
  return { messages, garbage, closed };
}

function check(input: Stream, { messages, garbage }: Exchange, count: (kind: string) => void): void {
  const what = `stream ${input.bytes.toString('hex').slice(0, 600)} split at ${JSON.stringify(input.splits)}`;
  assert.equal(garbage, undefined, `${what}: the root sent bytes that are not its frames: ${garbage}`);
  messages.forEach((message, index) => {
    assert.ok(!['hello', 'ack'].includes(message.type), `${what}: the root sent a child's ${message.type}`);
    if (message.type === 'refuse') {
      assert.ok(REASONS.has(message.reason), `${what}: REFUSE with reason ${message.reason}`);
      assert.ok(message.message.length > 0, `${what}: REFUSE without a message`);
      assert.equal(index, messages.length - 1, `${what}: frames after REFUSE: ${JSON.stringify(messages.slice(index).map((m) => m.type))}`);
      count(`refuse ${message.reason}`);
    } else count(message.type);
  });
}

describe('replication fuzz', () => {
  const fuzzed = fuzzNodeHooks('replication-fuzz');

  /**
   * A HELLO and then ACKs. Mutated bytes almost always fail the CRC (PROTOCOL_ERROR): some HELLOs are well-framed and
   * wrong instead (another version or dataset, the root's own id, a path through the root or too long, a head past the
   * root's or on another chain), so that every refusal of the handshake is reached. `valid` makes one the root accepts.
   */
  const helloStream = (valid: boolean): fc.Arbitrary<Buffer[]> =>
    fc
      .record({
        version: valid ? fc.constant(PROTOCOL_VERSION) : fc.oneof({ weight: 6, arbitrary: fc.constant(PROTOCOL_VERSION) }, { weight: 1, arbitrary: fc.nat(0xffff) }),
        dataset: valid ? fc.constantFrom('new', 'same') : fc.constantFrom('new', 'same', 'same', 'other'),
        resync: fc.boolean(),
        nodeId: valid ? fc.stringMatching(/^fz-[a-z0-9]{1,8}$/) : fc.oneof({ weight: 6, arbitrary: fc.stringMatching(/^fz-[a-z0-9]{1,8}$/) }, { weight: 1, arbitrary: fc.constant('') }),
        self: valid ? fc.constant(false) : fc.nat(8).map((n) => n === 0),
        path: valid ? fc.constant('none') : fc.constantFrom('none', 'none', 'none', 'root', 'long'),
        head: valid ? fc.constant('same') : fc.constantFrom('same', 'same', 'ahead', 'forked'),
        credential: valid ? fc.constant(undefined) : fc.option(fc.string({ maxLength: 40 }), { nil: undefined, freq: 4 }),
        acks: fc.array(fc.record({ appliedSeq: fc.nat(12), receivedBytes: fc.nat(100_000) }), { maxLength: 3 }),
      })
      .map(({ version, dataset, resync, nodeId, self, path, head, credential, acks }) => {
        const rootHead = fuzzed.node.store.head();
        const joined = dataset !== 'new';
        const hello: Message = {
          type: 'hello',
          protocolVersion: version,
          resync,
          datasetId: dataset === 'new' ? '' : dataset === 'same' ? fuzzed.node.store.datasetId : 'fz-other-dataset',
          nodeId: self ? fuzzed.node.store.nodeId : nodeId,
          path: path === 'none' ? [] : path === 'root' ? [fuzzed.node.store.nodeId] : Array.from({ length: PATH_NODES_MAX }, (_, i) => `fz-${i}`),
          head: !joined ? { seq: 0, hash: GENESIS_HASH } : head === 'same' ? rootHead : head === 'ahead' ? { seq: rootHead.seq + 5, hash: rootHead.hash } : { seq: rootHead.seq, hash: Buffer.alloc(32, 7) },
          httpUrl: '',
          ...(credential === undefined ? {} : { credential }),
        };
        return [encodeMessage(hello), ...acks.map((ack) => encodeMessage({ type: 'ack', ...ack }))];
      });

  test('replication fuzz: mutated and split HELLO and ACK frames from a child get decodable frames, a defined REFUSE or a close', async (t) => {
    const stream: fc.Arbitrary<Stream> = fc
      .record({ frames: helloStream(false), mutated: fc.nat(2).map((n) => n > 0), changes: fc.array(byteChange, { maxLength: 3 }), splits: fc.array(fc.nat(), { maxLength: 4 }) })
      .map(({ frames, mutated, changes, splits }) => {
        const joined = Buffer.concat(frames);
        const bytes = mutated ? applyChanges(joined, changes) : joined;
        return { bytes, splits: splitPoints(splits, bytes.length) };
      });
    const kinds = await fuzzStreams(stream, (input) => exchange(fuzzed.node.replicationAddress, input), check, RUNS);
    t.diagnostic(`answers: ${JSON.stringify([...kinds].sort())}`);
    assert.ok((kinds.get('welcome') ?? 0) > 10, `too few children welcomed: ${JSON.stringify([...kinds])}`);
    assert.ok([...kinds.keys()].filter((kind) => kind.startsWith('refuse ')).length >= 5, `too few kinds of refusal: ${JSON.stringify([...kinds])}`);
  });

  test('replication fuzz: the root welcomes a valid child, its chain verifies, it logged no error and counts no child', async () => {
    const [bytes] = fc.sample(helloStream(true), 1);
    const { messages } = await exchange(fuzzed.node.replicationAddress, { bytes: Buffer.concat(bytes!), splits: [] });
    assert.equal(messages[0]?.type, 'welcome', JSON.stringify(messages[0]));
    await auditLog(fuzzed.node.url);
    await eventually(
      () => Promise.resolve(nodeMetric(fuzzed.node, 'mercury_replication_children') === 0),
      () => `children ${nodeMetric(fuzzed.node, 'mercury_replication_children')}`,
      10_000,
    );
    assert.deepEqual(fuzzed.errorLog, []);
  });
});
