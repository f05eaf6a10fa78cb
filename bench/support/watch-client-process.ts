/**
 * A watch benchmark client process, forked by `bench/watch-bench.ts`: it holds a few thousand watch connections (so
 * that no process of the benchmark comes near the open-files limit) and records, for every events message, which
 * watcher received which seq when.
 *
 * Times are `performance.timeOrigin + performance.now()`: one clock for every process of the host, so the parent can
 * subtract the time it saw a write acknowledged. The message handler does as little as it can (it finds `"seq":` in
 * the raw bytes, no JSON.parse), because this process shares the machine's cores with the node under test.
 *
 * Parent -> child: {type:'open', watchers:[{index,url,prefix}], localAddress, concurrency}, {type:'count'},
 * {type:'collect'}, {type:'close'}. Child -> parent: {type:'opened', ...}, {type:'count', received},
 * {type:'records', watcher, seq, timeMs, closes}.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export interface WatcherSpec {
  /** Global index of the watcher in the benchmark (the parent maps it to its node and prefix). */
  readonly index: number;
  /** ws://HOST:PORT/v1/watch */
  readonly url: string;
  readonly prefix: string;
}

export type ToClient =
  | { readonly type: 'open'; readonly watchers: readonly WatcherSpec[]; readonly localAddress: string; readonly concurrency: number }
  | { readonly type: 'count' }
  | { readonly type: 'collect' }
  | { readonly type: 'close' };

export type FromClient =
  | { readonly type: 'opened'; readonly subscribed: number; readonly failed: number; readonly firstError: string | undefined }
  | { readonly type: 'count'; readonly received: number }
  | { readonly type: 'records'; readonly watcher: Int32Array; readonly seq: Int32Array; readonly timeMs: Float64Array; readonly closes: number };

const SEQ_FIELD = Buffer.from('"seq":');
const CHAR_E = 0x65; // {"type":"events" has 'e' then 'v' at offsets 9 and 10
const CHAR_V = 0x76;
const CHAR_S = 0x73; // {"type":"subscribed" has 's' then 'u'
const CHAR_U = 0x75;

/** Growable columns of (watcher, seq, time) records. */
class Records {
  watcher = new Int32Array(1 << 16);
  seq = new Int32Array(1 << 16);
  timeMs = new Float64Array(1 << 16);
  length = 0;

  add(watcher: number, seq: number, timeMs: number): void {
    if (this.length === this.seq.length) {
      const grow = <T extends Int32Array | Float64Array>(old: T, make: (n: number) => T): T => {
        const next = make(old.length * 2);
        next.set(old);
        return next;
      };
      this.watcher = grow(this.watcher, (n) => new Int32Array(n));
      this.seq = grow(this.seq, (n) => new Int32Array(n));
      this.timeMs = grow(this.timeMs, (n) => new Float64Array(n));
    }
    this.watcher[this.length] = watcher;
    this.seq[this.length] = seq;
    this.timeMs[this.length] = timeMs;
    this.length++;
  }
}

function readSeq(data: Buffer): number {
  let at = data.indexOf(SEQ_FIELD) + SEQ_FIELD.length;
  let seq = 0;
  for (let digit = data[at]! - 0x30; digit >= 0 && digit <= 9; digit = data[++at]! - 0x30) seq = seq * 10 + digit;
  return seq;
}

const records = new Records();
const sockets: Socket[] = [];
let closes = 0;

function send(message: FromClient): void {
  process.send!(message);
}

/**
 * One watcher: a plain TCP socket that speaks just enough WebSocket (RFC 6455) for the benchmark: the upgrade, one
 * masked subscribe frame, a pong for each ping, and server frames split out of the byte stream (the server never masks or compresses, and
 * sends each small message as one frame). `ws` costs several times more CPU per message, and this process shares the
 * cores with the node it measures.
 */
function openOne(spec: WatcherSpec, localAddress: string): Promise<void> {
  const { hostname, port, pathname } = new URL(spec.url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), localAddress, noDelay: true });
    let upgraded = false;
    let subscribed = false;
    let pending: Buffer | undefined;
    const fail = (error: Error): void => {
      if (!subscribed) reject(error);
      socket.destroy();
    };
    socket.once('connect', () =>
      socket.write(
        `GET ${pathname} HTTP/1.1\r\nhost: ${hostname}:${port}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
          `sec-websocket-key: ${randomBytes(16).toString('base64')}\r\nsec-websocket-version: 13\r\n\r\n`,
      ),
    );
    const onMessage = (payload: Buffer, timeMs: number): void => {
      if (payload[9] === CHAR_E && payload[10] === CHAR_V) records.add(spec.index, readSeq(payload), timeMs);
      else if (!subscribed && payload[9] === CHAR_S && payload[10] === CHAR_U) {
        subscribed = true;
        sockets.push(socket);
        resolve();
      }
    };
    socket.on('data', (chunk: Buffer) => {
      const timeMs = performance.timeOrigin + performance.now();
      let data = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
      pending = undefined;
      if (!upgraded) {
        const end = data.indexOf('\r\n\r\n');
        if (end === -1) {
          pending = data;
          return;
        }
        if (!data.subarray(0, 12).toString('latin1').endsWith('101')) return fail(new Error(`upgrade refused: ${data.subarray(0, end).toString('latin1')}`));
        upgraded = true;
        socket.write(maskedTextFrame(JSON.stringify({ type: 'subscribe', id: 1, prefixes: [spec.prefix] })));
        data = data.subarray(end + 4);
      }
      let at = 0;
      while (data.length - at >= 2) {
        const opcode = data[at]! & 0x0f;
        let length = data[at + 1]! & 0x7f;
        let header = 2;
        if (length === 126) {
          if (data.length - at < 4) break;
          length = data.readUInt16BE(at + 2);
          header = 4;
        } else if (length === 127) {
          if (data.length - at < 10) break;
          length = Number(data.readBigUInt64BE(at + 2));
          header = 10;
        }
        if (data.length - at < header + length) break;
        if (opcode === 0x8) return fail(new Error(`closed by the node: ${data.subarray(at + header + 2, at + header + length).toString()}`));
        // The node pings a watcher it has heard nothing from, and closes (4408) one silent for its peerSilentMs.
        if (opcode === 0x9) socket.write(maskedFrame(0xa, data.subarray(at + header, at + header + length)));
        // Text frames; a large message may come as a text frame and a continuation, and only the first holds "seq".
        if (opcode === 0x1) onMessage(data.subarray(at + header, at + header + length), timeMs);
        at += header + length;
      }
      if (at < data.length) pending = data.subarray(at);
    });
    socket.on('error', fail);
    socket.on('close', () => {
      if (subscribed) closes++;
      else reject(new Error('closed before subscribed'));
    });
  });
}

/** A client frame: FIN + text, masked as RFC 6455 requires of clients (a zero mask: the benchmark hides nothing). */
function maskedTextFrame(text: string): Buffer {
  return maskedFrame(0x1, Buffer.from(text));
}

/** A short client frame (FIN, `opcode`, payload under 126 bytes: a subscribe, or a pong echoing a ping's payload). */
function maskedFrame(opcode: number, payload: Buffer): Buffer {
  if (payload.length >= 126) throw new RangeError('message too long for this minimal client');
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length, 0, 0, 0, 0]), payload]);
}

async function open(watchers: readonly WatcherSpec[], localAddress: string, concurrency: number): Promise<void> {
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  const lane = async (): Promise<void> => {
    while (next < watchers.length) {
      const spec = watchers[next++]!;
      try {
        await openOne(spec, localAddress);
      } catch (error) {
        failed++;
        firstError ??= (error as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  send({ type: 'opened', subscribed: sockets.length, failed, firstError });
}

process.on('message', (message: ToClient) => {
  switch (message.type) {
    case 'open':
      void open(message.watchers, message.localAddress, message.concurrency);
      break;
    case 'count':
      send({ type: 'count', received: records.length });
      break;
    case 'collect':
      send({
        type: 'records',
        // slice, not subarray: the serializer would copy a view's whole backing buffer.
        watcher: records.watcher.slice(0, records.length),
        seq: records.seq.slice(0, records.length),
        timeMs: records.timeMs.slice(0, records.length),
        closes,
      });
      break;
    case 'close':
      for (const socket of sockets) socket.destroy();
      process.disconnect();
      break;
  }
});
