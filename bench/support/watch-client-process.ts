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
import { WebSocket } from 'ws';

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
const sockets: WebSocket[] = [];
let closes = 0;

function send(message: FromClient): void {
  process.send!(message);
}

function openOne(spec: WatcherSpec, localAddress: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(spec.url, { perMessageDeflate: false, skipUTF8Validation: true, localAddress });
    let subscribed = false;
    socket.on('open', () => socket.send(JSON.stringify({ type: 'subscribe', id: 1, prefixes: [spec.prefix] })));
    socket.on('message', (data: Buffer) => {
      const timeMs = performance.timeOrigin + performance.now();
      if (data[9] === CHAR_E && data[10] === CHAR_V) records.add(spec.index, readSeq(data), timeMs);
      else if (!subscribed && data[9] === CHAR_S && data[10] === CHAR_U) {
        subscribed = true;
        sockets.push(socket);
        resolve();
      }
    });
    socket.on('error', (error) => {
      if (!subscribed) reject(error);
    });
    socket.on('close', () => {
      if (subscribed) closes++;
      else reject(new Error('closed before subscribed'));
    });
  });
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
      for (const socket of sockets) socket.terminate();
      process.disconnect();
      break;
  }
});
