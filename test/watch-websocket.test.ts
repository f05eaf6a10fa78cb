/**
 * The watch server's own WebSocket end (src/watch/websocket.ts): the handshake, client frames split at random points
 * (a frame's bytes held only while incomplete), fragments, pings, the close handshake, and every protocol violation
 * mapped to its close code. The socket is a small fake whose bytes are fed synchronously; the real node is exercised
 * by the other watch tests with the `ws` client.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from './support/manual-clock.js';
import { clientFrame } from './support/watch.js';
import { assertProperty } from './support/seed.js';
import { Opcode } from '../src/watch/frame.js';
import { BodyBudget } from '../src/server/body-budget.js';
import { closeFrame, handshakeResponse, readHandshake, ServerWebSocket, type ServerWebSocketOwner } from '../src/watch/websocket.js';

const MESSAGE_BYTES_MAX = 1024;
const CLOSE_TIMEOUT_MS = 1_000;
const FRAME_TIMEOUT_MS = 5_000;
const QUEUE_BYTES_MAX = 4096;

/** The parts of a net.Socket the WebSocket uses; what it writes is collected, what the client sends is fed by `feed`. */
class FakeSocket extends EventEmitter {
  readonly written: Buffer[] = [];
  ended = false;
  destroyed = false;
  writableLength = 0;
  write(data: Buffer): boolean {
    assert.ok(!this.ended, 'nothing is written after end()');
    this.written.push(Buffer.from(data));
    return true;
  }
  end(): void {
    this.ended = true;
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.emit('close');
  }
  feed(data: Buffer): void {
    this.emit('data', data);
  }
  /** The frames the server wrote, decoded (the server never masks). */
  frames(): { fin: boolean; opcode: number; payload: Buffer }[] {
    const data = Buffer.concat(this.written);
    const frames: { fin: boolean; opcode: number; payload: Buffer }[] = [];
    for (let at = 0; at < data.length; ) {
      let length = data[at + 1]! & 0x7f;
      let header = 2;
      if (length === 126) [length, header] = [data.readUInt16BE(at + 2), 4];
      else if (length === 127) [length, header] = [Number(data.readBigUInt64BE(at + 2)), 10];
      assert.equal(data[at + 1]! & 0x80, 0, 'server frames are not masked');
      frames.push({ fin: (data[at]! & 0x80) !== 0, opcode: data[at]! & 0x0f, payload: data.subarray(at + header, at + header + length) });
      at += header + length;
    }
    return frames;
  }
}

interface Received {
  readonly messages: { text: string; binary: boolean }[];
  readonly failures: { message: string; code: number | string | undefined }[];
  closed: number;
}

function open(heldBudget?: BodyBudget): { socket: FakeSocket; websocket: ServerWebSocket; received: Received; clock: ManualClock } {
  const clock = new ManualClock();
  const received: Received = { messages: [], failures: [], closed: 0 };
  const owner: ServerWebSocketOwner = {
    clock,
    closeTimeoutMs: CLOSE_TIMEOUT_MS,
    frameTimeoutMs: FRAME_TIMEOUT_MS,
    messageBytesMax: MESSAGE_BYTES_MAX,
    heldBudget,
    queueBytesMax: QUEUE_BYTES_MAX,
    message: (_socket, data, binary) => received.messages.push({ text: data.toString('utf8'), binary }),
    drained: () => {},
    closed: () => received.closed++,
    failed: (_socket, message, code) => received.failures.push({ message, code }),
  };
  const socket = new FakeSocket();
  const websocket = new ServerWebSocket(owner, socket as unknown as Duplex);
  websocket.start(Buffer.alloc(0));
  return { socket, websocket, received, clock };
}

function closeCode(frame: { payload: Buffer } | undefined): number | undefined {
  return frame === undefined || frame.payload.length < 2 ? undefined : frame.payload.readUInt16BE(0);
}

test('watch websocket: the handshake answers the RFC 6455 accept value, echoes the first subprotocol, and refuses bad requests', () => {
  const request = (method: string, headers: Record<string, string>): IncomingMessage => ({ method, headers }) as unknown as IncomingMessage;
  const good = { upgrade: 'WebSocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' };
  const handshake = readHandshake(request('GET', { ...good, 'sec-websocket-protocol': 'mercury.v1, other' }));
  assert.ok(!('status' in handshake));
  assert.equal(handshake.accept, 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='); // the example of RFC 6455 section 1.3
  assert.equal(handshake.protocol, 'mercury.v1');
  assert.match(handshakeResponse(handshake), /^HTTP\/1\.1 101 Switching Protocols\r\n[^]*sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\nsec-websocket-protocol: mercury.v1\r\n\r\n$/);
  assert.deepEqual(readHandshake(request('POST', good)), { status: 405, message: 'a WebSocket handshake is a GET request' });
  for (const headers of [
    { ...good, upgrade: 'h2c' },
    { ...good, 'sec-websocket-key': 'short' },
    { ...good, 'sec-websocket-version': '12' },
    { ...good, 'sec-websocket-protocol': 'a b' },
  ])
    assert.equal((readHandshake(request('GET', headers)) as { status: number }).status, 400, JSON.stringify(headers));
  assert.match((readHandshake(request('GET', { ...good, 'sec-websocket-version': '12' })) as { headers: string }).headers, /^sec-websocket-version: 13, 8\r\n$/);
});

test('watch websocket: messages split at any byte, in fragments, with pings between, arrive whole and in order; nothing is held between them', () => {
  const message = fc.record({
    text: fc.string({ unit: 'grapheme', maxLength: 200 }),
    binary: fc.boolean(),
    // Where the message is cut into fragments (fractions of its length), and a ping after some of them.
    cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 3 }),
    ping: fc.option(fc.uint8Array({ maxLength: 20 }), { nil: undefined }),
  });
  assertProperty(
    fc.property(fc.array(message, { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }), (messages, splits) => {
      const { socket, websocket, received } = open();
      const pings: Buffer[] = [];
      const frames: Buffer[] = [];
      for (const { text, binary, cuts, ping } of messages) {
        const payload = Buffer.from(text, 'utf8');
        const points = [...new Set(cuts.map((cut) => Math.floor(cut * payload.length)))].sort((a, b) => a - b);
        const pieces = [0, ...points, payload.length].slice(1).map((end, i, ends) => payload.subarray(i === 0 ? 0 : ends[i - 1]!, end));
        pieces.forEach((piece, i) => {
          frames.push(clientFrame(i === pieces.length - 1, i === 0 ? (binary ? Opcode.BINARY : Opcode.TEXT) : Opcode.CONTINUATION, piece));
          // A control frame may come between the fragments of a message (RFC 6455 section 5.4).
          if (ping !== undefined && i === 0) {
            frames.push(clientFrame(true, Opcode.PING, Buffer.from(ping)));
            pings.push(Buffer.from(ping));
          }
        });
      }
      const bytes = Buffer.concat(frames);
      for (let at = 0, i = 0; at < bytes.length; i++) {
        const end = Math.min(bytes.length, at + splits[i % splits.length]!);
        socket.feed(Buffer.from(bytes.subarray(at, end)));
        at = end;
      }
      assert.deepEqual(received.messages, messages.map(({ text, binary }) => ({ text, binary })));
      assert.deepEqual(received.failures, []);
      const pongs = socket.frames().filter((frame) => frame.opcode === Opcode.PONG);
      assert.deepEqual(pongs.map((frame) => frame.payload), pings);
      const state = websocket as unknown as Record<string, unknown>;
      assert.ok('partial' in state && 'fragments' in state, 'the fields checked below exist');
      assert.equal(state.partial, undefined, 'no bytes held once every frame is complete');
      assert.equal(state.fragments, undefined, 'no fragments held once every message is complete');
    }),
    { numRuns: 200 },
  );
});

test('watch websocket: protocol violations close with 1002, 1007 or 1009 and end the connection', () => {
  const cases: [string, Buffer, number][] = [
    ['unmasked', Buffer.from([0x81, 0x01, 0x61]), 1002],
    ['RSV1 set', clientFrame(true, 0x40 | Opcode.TEXT, Buffer.from('a')), 1002],
    ['unknown opcode', clientFrame(true, 0x3, Buffer.from('a')), 1002],
    ['fragmented ping', clientFrame(false, Opcode.PING, Buffer.alloc(0)), 1002],
    ['long ping', clientFrame(true, Opcode.PING, Buffer.alloc(126)), 1002],
    ['continuation first', clientFrame(true, Opcode.CONTINUATION, Buffer.from('a')), 1002],
    ['new message inside one', Buffer.concat([clientFrame(false, Opcode.TEXT, Buffer.from('a')), clientFrame(true, Opcode.TEXT, Buffer.from('b'))]), 1002],
    ['invalid UTF-8', clientFrame(true, Opcode.TEXT, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 1007],
    ['invalid UTF-8 across fragments', Buffer.concat([clientFrame(false, Opcode.TEXT, Buffer.from([0xe2, 0x82])), clientFrame(true, Opcode.CONTINUATION, Buffer.from([0x41]))]), 1007],
    ['close code 1005 on the wire', clientFrame(true, Opcode.CLOSE, Buffer.from([0x03, 0xed])), 1002],
    ['1-byte close', clientFrame(true, Opcode.CLOSE, Buffer.from([0x03])), 1002],
  ];
  for (const [name, bytes, code] of cases) {
    const { socket, received, clock } = open();
    socket.feed(bytes);
    const frames = socket.frames();
    assert.equal(frames.length, 1, name);
    assert.equal(frames[0]!.opcode, Opcode.CLOSE, name);
    assert.equal(closeCode(frames[0]), code, name);
    assert.ok(socket.ended, `${name}: the connection is ended`);
    assert.deepEqual(received.messages, [], name);
    assert.equal(received.failures.length, 1, name);
    socket.feed(clientFrame(true, Opcode.TEXT, Buffer.from('{}')));
    assert.deepEqual(received.messages, [], `${name}: nothing is read after the failure`);
    clock.advance(CLOSE_TIMEOUT_MS);
    assert.ok(socket.destroyed, `${name}: a peer that stays is cut off after the close timeout`);
    assert.equal(received.closed, 1);
  }
});

test('watch websocket: a message announced larger than the limit is refused with 1009 before its payload is buffered', () => {
  for (const lengthBytes of [2, 8] as const) {
    const { socket, received } = open();
    const frame = clientFrame(true, Opcode.TEXT, Buffer.alloc(MESSAGE_BYTES_MAX + 1, 0x61), undefined, lengthBytes);
    socket.feed(frame.subarray(0, 2 + lengthBytes)); // the header alone
    assert.equal(closeCode(socket.frames()[0]), 1009);
    assert.deepEqual(received.messages, []);
  }
  // Fragments count together: each is under the limit, the message is not. The reason names the limit, not what was
  // left of it (audit of 2026-12-06: "message larger than 61072 bytes" for a limit of 131072).
  const { socket } = open();
  socket.feed(clientFrame(false, Opcode.TEXT, Buffer.alloc(MESSAGE_BYTES_MAX - 10, 0x61)));
  assert.deepEqual(socket.frames(), []);
  socket.feed(clientFrame(true, Opcode.CONTINUATION, Buffer.alloc(11, 0x61)));
  assert.equal(closeCode(socket.frames()[0]), 1009);
  assert.equal(socket.frames()[0]!.payload.subarray(2).toString(), `message larger than ${MESSAGE_BYTES_MAX} bytes (${MESSAGE_BYTES_MAX - 10} bytes of it in earlier fragments)`);
  // A 64-bit length beyond 32 bits.
  const huge = open();
  huge.socket.feed(Buffer.from([0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]));
  assert.equal(closeCode(huge.socket.frames()[0]), 1009);
});

test('watch websocket: the close handshake, from either side', () => {
  // The client closes: its code and reason are echoed, the connection ends, nothing more is delivered or sent.
  const byClient = open();
  const payload = Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('bye')]); // 4000
  byClient.socket.feed(Buffer.concat([clientFrame(true, Opcode.CLOSE, payload), clientFrame(true, Opcode.TEXT, Buffer.from('late'))]));
  const echoed = byClient.socket.frames();
  assert.equal(echoed.length, 1);
  assert.equal(closeCode(echoed[0]), 4000);
  assert.equal(echoed[0]!.payload.subarray(2).toString(), 'bye');
  assert.ok(byClient.socket.ended);
  assert.deepEqual(byClient.received.messages, []);
  byClient.websocket.send('{"type":"after"}');
  assert.equal(byClient.socket.frames().length, 1);

  // A close frame without a code is answered with an empty close frame.
  const empty = open();
  empty.socket.feed(clientFrame(true, Opcode.CLOSE, Buffer.alloc(0)));
  assert.deepEqual(empty.socket.frames()[0]!.payload, Buffer.alloc(0));

  // The server closes: messages still in flight from the client are dropped, its close frame ends the connection.
  const byServer = open();
  byServer.websocket.close(4008, 'slow watcher; resume from seq 12');
  assert.equal(closeCode(byServer.socket.frames()[0]), 4008);
  assert.ok(!byServer.socket.ended, 'the peer is given time to answer');
  byServer.socket.feed(clientFrame(true, Opcode.TEXT, Buffer.from('{"type":"subscribe"}')));
  assert.deepEqual(byServer.received.messages, []);
  byServer.socket.feed(clientFrame(true, Opcode.CLOSE, Buffer.from([0x0f, 0xa8])));
  assert.equal(byServer.socket.frames().length, 1, 'no second close frame');
  assert.ok(byServer.socket.ended);

  // A reason longer than a control frame holds is cut on a character boundary.
  const long = closeFrame(1001, 'é'.repeat(100));
  assert.ok(long.length <= 127);
  assert.ok(Buffer.from(long.subarray(4).toString('utf8'), 'utf8').equals(long.subarray(4)));
});

test('watch websocket: pings are not answered while the send queue is full, so a peer that does not read cannot grow it', () => {
  const { socket } = open();
  socket.feed(clientFrame(true, Opcode.PING, Buffer.from('a')));
  socket.writableLength = QUEUE_BYTES_MAX;
  socket.feed(clientFrame(true, Opcode.PING, Buffer.from('b')));
  socket.writableLength = 0;
  socket.feed(clientFrame(true, Opcode.PING, Buffer.from('c')));
  assert.deepEqual(
    socket.frames().map((frame) => [frame.opcode, frame.payload.toString()]),
    [
      [Opcode.PONG, 'a'],
      [Opcode.PONG, 'c'],
    ],
  );
});

test('watch websocket: a message sent as 1-byte fragments arrives whole, held in one buffer that doubles up to the limit (no object per fragment)', () => {
  const { socket, received, websocket } = open();
  const text = Array.from({ length: MESSAGE_BYTES_MAX }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');
  const held = new Set<Buffer>();
  for (let i = 0; i < text.length; i++) {
    socket.feed(clientFrame(i === text.length - 1, i === 0 ? Opcode.TEXT : Opcode.CONTINUATION, Buffer.from(text[i]!)));
    const fragments = (websocket as unknown as { fragments: Buffer | undefined }).fragments;
    if (fragments !== undefined) held.add(fragments);
  }
  assert.deepEqual(received.messages, [{ text, binary: false }]);
  assert.deepEqual(received.failures, []);
  // 256, 512, then 1024 bytes (the limit): a few buffers in all, never one larger than the limit.
  const sizes = [...held].map((buffer) => buffer.length);
  assert.ok(held.size <= 3, `buffers held: ${sizes.join(', ')}`);
  assert.ok(sizes.every((size) => size <= MESSAGE_BYTES_MAX), `buffers held: ${sizes.join(', ')}`);
  assert.equal((websocket as unknown as { fragments: Buffer | undefined }).fragments, undefined, 'nothing held after the message');
});

test('watch websocket: a frame sent a byte at a time arrives whole, in a buffer that doubles as bytes arrive (no copy of everything so far per byte)', () => {
  const { socket, received, websocket } = open();
  const text = 'x'.repeat(MESSAGE_BYTES_MAX);
  const frame = clientFrame(true, Opcode.TEXT, Buffer.from(text));
  const held = new Set<Buffer>();
  for (let i = 0; i < frame.length; i++) {
    socket.feed(frame.subarray(i, i + 1));
    const partial = (websocket as unknown as { partial: Buffer | undefined }).partial;
    if (partial !== undefined) held.add(partial);
  }
  assert.deepEqual(received.messages, [{ text, binary: false }]);
  assert.deepEqual(received.failures, []);
  // The header's first bytes (up to the 2-byte length) in small buffers, then 256, 512, 1024 and the frame's size.
  const large = [...held].filter((buffer) => buffer.length > 16).map((buffer) => buffer.length);
  assert.deepEqual(large, [256, 512, 1024, frame.length]);
  assert.equal((websocket as unknown as { partial: Buffer | undefined }).partial, undefined, 'nothing held after the frame');
});

test('watch websocket: a header announcing a large frame costs what arrived of it, not what it announced', () => {
  // The audit of 2026-12-06 (ws-announced): a header announcing 128 KiB, with nothing after it, made the node allocate
  // the whole frame at once on each connection.
  for (const arrived of [0, 10, 300, 700]) {
    const { socket, websocket } = open();
    const frame = clientFrame(true, Opcode.TEXT, Buffer.alloc(MESSAGE_BYTES_MAX, 0x61));
    socket.feed(frame.subarray(0, 8 + arrived)); // the header (2 + 2 + 4 bytes of mask) and `arrived` payload bytes
    const partial = (websocket as unknown as { partial: Buffer | undefined }).partial!;
    assert.ok(partial.length <= Math.max(256, 8 + arrived), `${arrived} bytes arrived: ${partial.length} bytes held`);
    socket.feed(frame.subarray(8 + arrived));
    assert.equal((websocket as unknown as { partial: Buffer | undefined }).partial, undefined);
  }
});

// Left open by the deadline of 2026-12-06: it bounded how long partial frames are held, not how much (one address, 4,000
// connections x 128 KiB for 30 s at a time). What they hold is now reserved in the node's request-body budget.
test('watch websocket: what incomplete frames and messages hold is reserved in the node-wide budget; past it, 1013', () => {
  // Room for three whole frames (payload and header) held, not for a fourth.
  const budget = new BodyBudget(3 * (MESSAGE_BYTES_MAX + 14));
  const frame = clientFrame(true, Opcode.TEXT, Buffer.alloc(MESSAGE_BYTES_MAX, 0x61));
  const holders = [open(budget), open(budget), open(budget)];
  for (const { socket } of holders) socket.feed(frame.subarray(0, frame.length - 1)); // all but the last byte
  assert.ok(budget.bytesInFlight >= 3 * (MESSAGE_BYTES_MAX - 1), `${budget.bytesInFlight} reserved`);
  // A fourth does not fit: closed with 1013, holding nothing; the others go on.
  const late = open(budget);
  late.socket.feed(frame.subarray(0, frame.length - 1));
  assert.equal(closeCode(late.socket.frames().at(-1)), 1013);
  assert.match(late.received.failures[0]!.message, /holds \d+ bytes of incomplete messages and request bodies, or your address \(.*\) its share of them; send each message whole/);
  // Completed, a message gives its reservation back; closed, so does a partial one; a message in one read takes none.
  holders[0]!.socket.feed(frame.subarray(frame.length - 1));
  assert.equal(holders[0]!.received.messages.length, 1);
  holders[1]!.socket.destroy();
  const whole = open(budget);
  whole.socket.feed(clientFrame(true, Opcode.TEXT, Buffer.from('{"type":"ping"}')));
  assert.equal(whole.received.messages.length, 1);
  holders[2]!.socket.feed(frame.subarray(frame.length - 1));
  assert.equal(budget.bytesInFlight, 0);
  // Fragments count too, as their message grows.
  const fragmented = open(budget);
  fragmented.socket.feed(clientFrame(false, Opcode.TEXT, Buffer.alloc(600, 0x62)));
  assert.ok(budget.bytesInFlight >= 600, `${budget.bytesInFlight} reserved for a 600-byte fragment`);
  fragmented.socket.feed(clientFrame(true, Opcode.CONTINUATION, Buffer.alloc(10, 0x62)));
  assert.equal(fragmented.received.messages.length, 1);
  assert.equal(budget.bytesInFlight, 0);
});

test('watch websocket: a frame or fragmented message not in full within frameTimeoutMs of its first byte is closed with 1008', () => {
  const reason = /not received in full within 5000 ms/;
  // The audit of 2026-12-06 (ws-partial-hold, ws-partial-fill): a partial frame was held for as long as the peer liked.
  const partial = open();
  const frame = clientFrame(true, Opcode.TEXT, Buffer.alloc(MESSAGE_BYTES_MAX - 1, 0x61));
  partial.socket.feed(frame.subarray(0, frame.length - 1));
  partial.clock.advance(FRAME_TIMEOUT_MS - 1);
  assert.deepEqual(partial.socket.frames(), [], 'not before the deadline');
  partial.clock.advance(1);
  assert.equal(closeCode(partial.socket.frames()[0]), 1008);
  assert.match(partial.socket.frames()[0]!.payload.subarray(2).toString(), reason);
  assert.ok(partial.socket.ended);
  assert.equal((partial.websocket as unknown as { partial: Buffer | undefined }).partial, undefined, 'what was held is let go');
  assert.match(partial.received.failures[0]!.message, reason);

  // A message of fragments: each fragment arrives whole, and pings keep coming, but the final fragment never does.
  const fragments = open();
  fragments.socket.feed(clientFrame(false, Opcode.TEXT, Buffer.from('{"type":')));
  for (let i = 0; i < 9; i++) {
    fragments.clock.advance(FRAME_TIMEOUT_MS / 10);
    fragments.socket.feed(clientFrame(true, Opcode.PING, Buffer.from('p')));
  }
  assert.ok(fragments.socket.frames().every((frame) => frame.opcode === Opcode.PONG));
  fragments.clock.advance(FRAME_TIMEOUT_MS / 10);
  assert.equal(closeCode(fragments.socket.frames().at(-1)), 1008);

  // A header alone (its first byte) counts too.
  const header = open();
  header.socket.feed(Buffer.from([0x81]));
  header.clock.advance(FRAME_TIMEOUT_MS);
  assert.equal(closeCode(header.socket.frames()[0]), 1008);
});

test('watch websocket: each frame has the whole deadline from its own first byte, and an idle connection has none', () => {
  // A pipelining client whose every write ends part-way into its next message is never cut off however long it
  // goes on, as long as each message takes less than the deadline.
  const { socket, received, clock } = open();
  const messages = Array.from({ length: 20 }, (_, i) => `{"n":${String(i).padStart(2, '0')}}`);
  const stream = Buffer.concat(messages.map((text) => clientFrame(true, Opcode.TEXT, Buffer.from(text))));
  const frameBytes = stream.length / messages.length;
  for (let i = 0; i < messages.length; i++) {
    socket.feed(stream.subarray(i * frameBytes + (i === 0 ? 0 : 3), Math.min(stream.length, (i + 1) * frameBytes + 3)));
    clock.advance(FRAME_TIMEOUT_MS * 0.8);
  }
  assert.deepEqual(received.messages.map((message) => message.text), messages);
  assert.deepEqual(socket.frames(), []);
  // Nothing under way: silence for any length of time is a watcher waiting for changes.
  clock.advance(FRAME_TIMEOUT_MS * 100);
  assert.deepEqual(socket.frames(), []);
  assert.deepEqual(received.failures, []);
});
