/**
 * Helpers for watch tests: a recording WebSocket client, and an oracle that derives from the node's log (GET /v1/log)
 * the events a subscription must receive, written independently of src/watch so that the tests check the hub against
 * the log rather than against itself.
 */
import assert from 'node:assert/strict';
import { connect as connectTcp, type Socket } from 'node:net';
import { WebSocket, type RawData } from 'ws';
import type { Op } from '../../src/log/index.js';
import { opsFromJson, requestJson, type LogEntryJson, type LogPage } from './http.js';

export interface WatchEvent {
  readonly type: 'put' | 'delete' | 'deleteRange';
  readonly key?: string;
  readonly keyEncoding?: 'utf8' | 'base64';
  readonly value?: string;
  readonly valueEncoding?: 'utf8' | 'base64';
  readonly start?: string;
  readonly startEncoding?: 'utf8' | 'base64';
  readonly end?: string | null;
  readonly endEncoding?: 'utf8' | 'base64' | null;
  readonly modSeq: number;
  /** With the `authors` filter: who wrote the op (null where not recorded). */
  readonly author?: string | null;
}

export interface SnapshotItem {
  readonly key: string;
  readonly keyEncoding: 'utf8' | 'base64';
  readonly value?: string;
  readonly valueEncoding?: 'utf8' | 'base64';
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

export type ServerMessage =
  | { readonly type: 'subscribed'; readonly id: string | number; readonly fromSeq: number }
  | { readonly type: 'unsubscribed'; readonly id: string | number }
  | { readonly type: 'events'; readonly id: string | number; readonly seq: number; readonly timeMs: number; readonly hash?: string; readonly events: readonly WatchEvent[] }
  | {
      readonly type: 'snapshot';
      readonly id: string | number;
      readonly seq: number;
      readonly items: readonly SnapshotItem[];
      readonly done: boolean;
      /** On the first page of each snapshot (src/api/watch.ts). */
      readonly begin?: true;
      /** On the done page: the hash of entry seq. */
      readonly hash?: string;
    }
  | { readonly type: 'progress'; readonly id: string | number; readonly seq: number; readonly hash?: string }
  | { readonly type: 'error'; readonly id?: string | number; readonly code: string; readonly message: string };

export interface Filters {
  readonly puts?: boolean;
  readonly deletes?: boolean;
  readonly keysOnly?: boolean;
  readonly authors?: boolean;
}

export interface SubscribeOptions {
  readonly fromSeq?: number;
  /** Sent as it is: tests of the node's validation pass values of any type. */
  readonly afterHash?: unknown;
  readonly filters?: Filters;
  readonly prefixesBase64?: readonly string[];
}

/** The WebSocket URL of a node's watch endpoint. */
export function watchUrl(baseUrl: string, path = '/v1/watch'): string {
  return `${baseUrl.replace(/^http/, 'ws')}${path}`;
}

/** A client that keeps every message it receives, with arrival times, and can wait for one. */
export class WatchClient {
  readonly messages: ServerMessage[] = [];
  readonly arrivedMs: number[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data: RawData, isBinary: boolean) => {
      assert.equal(isBinary, false, 'the server sends text frames only');
      this.messages.push(JSON.parse((data as Buffer).toString('utf8')) as ServerMessage);
      this.arrivedMs.push(performance.now());
      this.wake();
    });
    this.closed = new Promise((resolve) =>
      socket.once('close', (code: number, reason: Buffer) => {
        this.wake();
        resolve({ code, reason: reason.toString('utf8') });
      }),
    );
    socket.on('error', () => {});
  }

  /** `headers`: sent with the upgrade request (`authorization` on a node with auth required). */
  static async connect(baseUrl: string, path?: string, headers?: Record<string, string>): Promise<WatchClient> {
    const socket = new WebSocket(watchUrl(baseUrl, path), { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024, headers });
    const client = new WatchClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    return client;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  send(message: unknown): void {
    this.socket.send(JSON.stringify(message));
  }

  /** Sends subscribe and waits for its `subscribed` (or `error`) answer. */
  async subscribe(id: string | number, prefixes: readonly string[], options: SubscribeOptions = {}): Promise<ServerMessage> {
    const from = this.messages.length;
    this.send({ type: 'subscribe', id, prefixes, ...options });
    return this.waitFor((message) => 'id' in message && message.id === id && (message.type === 'subscribed' || message.type === 'error'), 5_000, from);
  }

  /** Resolves with the first message (from index `from`) that matches; fails after `timeoutMs`. */
  async waitFor(match: (message: ServerMessage) => boolean, timeoutMs = 5_000, from = 0): Promise<ServerMessage> {
    const deadline = performance.now() + timeoutMs;
    let checked = from;
    while (true) {
      for (; checked < this.messages.length; checked++) if (match(this.messages[checked]!)) return this.messages[checked]!;
      const left = deadline - performance.now();
      if (left <= 0 || this.socket.readyState === WebSocket.CLOSED)
        assert.fail(`no matching message within ${timeoutMs} ms (state ${this.socket.readyState}); last: ${JSON.stringify(this.messages.slice(-3))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits until the subscription has been told (by events, progress or snapshot) that it has everything up to `seq`. */
  async waitForSeq(id: string | number, seq: number, timeoutMs = 5_000): Promise<void> {
    await this.waitFor((message) => 'id' in message && message.id === id && 'seq' in message && message.seq >= seq && message.type !== 'snapshot', timeoutMs);
  }

  of(id: string | number): ServerMessage[] {
    return this.messages.filter((message) => 'id' in message && message.id === id);
  }

  eventsOf(id: string | number): Extract<ServerMessage, { type: 'events' }>[] {
    return this.messages.filter((message): message is Extract<ServerMessage, { type: 'events' }> => message.type === 'events' && message.id === id);
  }

  close(): void {
    this.socket.close();
  }

  terminate(): void {
    this.socket.terminate();
  }
}

// --- Raw frames ---------------------------------------------------------------------------------------------------------

/** A client frame: masked with `mask`, as RFC 6455 requires of clients; `lengthBytes` forces a length encoding. */
export function clientFrame(fin: boolean, opcode: number, payload: Buffer, mask = Buffer.from([0x12, 0x34, 0x56, 0x78]), lengthBytes?: 0 | 2 | 8): Buffer {
  const size = lengthBytes ?? (payload.length < 126 ? 0 : payload.length < 0x10000 ? 2 : 8);
  const header = Buffer.alloc(2 + size + 4);
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (size === 0) header[1] = 0x80 | payload.length;
  else if (size === 2) {
    header[1] = 0x80 | 126;
    header.writeUInt16BE(payload.length, 2);
  } else {
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  mask.copy(header, 2 + size);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i]! ^= mask[i & 3]!;
  return Buffer.concat([header, masked]);
}

/**
 * A watch connection on a bare TCP socket, for tests that send what the `ws` client never would (a frame cut off, a
 * header alone): the handshake is done, and `closed` resolves with the node's close frame (code and reason, undefined
 * when the connection ended without one) once the TCP connection ends.
 */
export async function rawWatchSocket(baseUrl: string): Promise<{ socket: Socket; closed: Promise<{ code: number | undefined; reason: string }> }> {
  const { hostname, port } = new URL(baseUrl);
  const socket = connectTcp({ host: hostname, port: Number(port) });
  socket.write(`GET /v1/watch HTTP/1.1\r\nhost: ${hostname}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n`);
  let received = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  socket.on('error', () => {});
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const deadline = performance.now() + 5_000;
  while (received.indexOf('\r\n\r\n') < 0) {
    assert.ok(performance.now() < deadline && !socket.destroyed, 'no answer to the handshake');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.match(received.toString('latin1'), /^HTTP\/1\.1 101 /);
  const closed = ended.then(() => {
    // The server's frames after the 101 (unmasked, short: a close frame is at most 125 bytes); the last is the close.
    let at = received.indexOf('\r\n\r\n') + 4;
    let close: { code: number | undefined; reason: string } = { code: undefined, reason: '' };
    while (at + 2 <= received.length) {
      const length = received[at + 1]! & 0x7f;
      const header = length === 126 ? 4 : length === 127 ? 10 : 2;
      const payloadBytes = length === 126 ? received.readUInt16BE(at + 2) : length === 127 ? Number(received.readBigUInt64BE(at + 2)) : length;
      const payload = received.subarray(at + header, at + header + payloadBytes);
      if ((received[at]! & 0x0f) === 0x8) close = { code: payload.length >= 2 ? payload.readUInt16BE(0) : undefined, reason: payload.subarray(2).toString('utf8') };
      at += header + payloadBytes;
    }
    return close;
  });
  return { socket, closed };
}

// --- Oracle -------------------------------------------------------------------------------------------------------------

export interface OracleSelection {
  readonly prefixes: readonly Buffer[];
  readonly filters?: Filters;
}

/** The watch protocol's rule: text when valid UTF-8 without control characters other than \t \n \r, else base64. */
export function bytesJson(bytes: Buffer): { text: string; encoding: 'utf8' | 'base64' } {
  const text = bytes.toString('utf8');
  const control = Array.from(text).some((char) => char.charCodeAt(0) < 0x20 && !'\t\n\r'.includes(char));
  return Buffer.from(text, 'utf8').equals(bytes) && !control ? { text, encoding: 'utf8' } : { text: bytes.toString('base64'), encoding: 'base64' };
}

/** The key after every key with this prefix ([] when there is none: unbounded). */
function afterPrefix(prefix: Buffer): Buffer | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) if (prefix[i]! < 0xff) return Buffer.concat([prefix.subarray(0, i), Buffer.from([prefix[i]! + 1])]);
  return undefined;
}

/**
 * The events messages (seq and events) a subscription must receive for these log entries: one per entry that selects
 * anything, its events in op order. Overlapping prefixes are merged first, as the protocol says.
 */
export function expectedEvents(entries: readonly LogEntryJson[], selection: OracleSelection): { seq: number; events: WatchEvent[] }[] {
  const result: { seq: number; events: WatchEvent[] }[] = [];
  for (const entry of entries) {
    const authors = (entry.authors ?? []).flatMap((run) => Array.from({ length: run.ops }, () => run.author));
    const events = expectedEntryEvents(entry.seq, opsFromJson(entry.ops), selection, authors);
    if (events.length > 0) result.push({ seq: entry.seq, events });
  }
  return result;
}

/** The events one entry's ops must give a subscription (none: the entry selects nothing, no message is sent). */
export function expectedEntryEvents(seq: number, ops: readonly Op[], selection: OracleSelection, opAuthors: readonly (string | null)[] = []): WatchEvent[] {
  const withAuthors = selection.filters?.authors ?? false;
  const puts = selection.filters?.puts ?? true;
  const deletes = selection.filters?.deletes ?? true;
  const keysOnly = selection.filters?.keysOnly ?? false;
  const sorted = [...selection.prefixes].sort((a, b) => Buffer.compare(a, b));
  const prefixes = sorted.filter((prefix) => !sorted.some((other) => other !== prefix && other.length < prefix.length && prefix.subarray(0, other.length).equals(other)));
  const unique = prefixes.filter((prefix, i) => i === 0 || !prefix.equals(prefixes[i - 1]!));
  const events: WatchEvent[] = [];
  for (const [index, op] of ops.entries()) {
    const author = withAuthors ? { author: opAuthors[index] ?? null } : {};
    if (op.type === 'deleteRange') {
      if (!deletes) continue;
      for (const prefix of unique) {
        const start = Buffer.compare(op.start, prefix) >= 0 ? op.start : prefix;
        const prefixEnd = afterPrefix(prefix);
        const opEnd = op.end.length === 0 ? undefined : op.end;
        const end = prefixEnd === undefined ? opEnd : opEnd === undefined ? prefixEnd : Buffer.compare(opEnd, prefixEnd) <= 0 ? opEnd : prefixEnd;
        if (end !== undefined && Buffer.compare(start, end) >= 0) continue;
        const s = bytesJson(start);
        const e = end === undefined ? undefined : bytesJson(end);
        events.push({ type: 'deleteRange', start: s.text, startEncoding: s.encoding, end: e?.text ?? null, endEncoding: e?.encoding ?? null, modSeq: seq, ...author });
      }
      continue;
    }
    if (op.type === 'put' ? !puts : !deletes) continue;
    if (!unique.some((prefix) => op.key.length >= prefix.length && op.key.subarray(0, prefix.length).equals(prefix))) continue;
    const key = bytesJson(op.key);
    if (op.type === 'delete') events.push({ type: 'delete', key: key.text, keyEncoding: key.encoding, modSeq: seq, ...author });
    else if (keysOnly) events.push({ type: 'put', key: key.text, keyEncoding: key.encoding, modSeq: seq, ...author });
    else {
      const value = bytesJson(op.value);
      events.push({ type: 'put', key: key.text, keyEncoding: key.encoding, value: value.text, valueEncoding: value.encoding, modSeq: seq, ...author });
    }
  }
  return events;
}

/** Log entries from `fromSeq` through the head (the log must still hold them). */
export async function readLog(baseUrl: string, fromSeq = 1): Promise<LogEntryJson[]> {
  const entries: LogEntryJson[] = [];
  let from = fromSeq;
  while (true) {
    const page = await requestJson<LogPage>(baseUrl, 'GET', `/v1/log?from=${from}&limit=1000`);
    entries.push(...page.entries);
    if (page.entries.length === 0 || page.entries[page.entries.length - 1]!.seq >= page.lastSeq) return entries;
    from = page.entries[page.entries.length - 1]!.seq + 1;
  }
}

/**
 * Checks a subscription's events messages against the oracle: the same entries in the same order (ordered, unique,
 * no gaps), each with exactly the entry's selected events (atomic per entry, in log order).
 */
export function assertEventsMatchLog(received: readonly { seq: number; events: readonly WatchEvent[] }[], expected: readonly { seq: number; events: readonly WatchEvent[] }[], label: string): void {
  const seqs = received.map((message) => message.seq);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! > seqs[i - 1]!, `${label}: seq ${seqs[i]} after ${seqs[i - 1]} (ordered, unique)`);
  assert.deepEqual(seqs, expected.map((message) => message.seq), `${label}: the entries that select anything, each exactly once`);
  received.forEach((message, i) => assert.deepEqual(message.events, expected[i]!.events, `${label}: events of seq ${message.seq}`));
}
