/**
 * The watch wire contract (src/api/watch.ts) without a node: what the node encodes, the client decodes to the same
 * bytes; what the client encodes, the node parses back; the client's decoder refuses anything else with an error that
 * names the field and the rule; and the one resume rule never misses nor repeats an entry across cut connections.
 *
 * Property tests are seeded (test/support/seed.ts): a failure prints `reproduce with MERCURY_TEST_SEED=...`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  eventsBody,
  eventsHead,
  errorMessage,
  parseClientMessage,
  parseServerMessage,
  progressMessage,
  snapshotMessage,
  subscribeMessage,
  subscribedMessage,
  unsubscribedMessage,
  WATCH_MESSAGE_LIMITS,
  WATCH_HASH_NO_STATE,
  WatchProtocolError,
  WatchResumeCursor,
  WatchServerMessageError,
  type ServerMessage,
  type SubscriptionId,
  type WatchChange,
} from '../src/api/index.js';
import { WatchCursor, type WatchEvent } from '../src/client/watch-cursor.js';
import { authorRuns, type Entry, type Op } from '../src/log/index.js';
import { canonicalSelection, EventCache, snapshotItemJson } from '../src/watch/selection.js';
import { selectEvents } from './support/select-events.js';
import { bytes, opArbitrary } from './support/arbitraries.js';
import { assertProperty } from './support/seed.js';

const idArbitrary: fc.Arbitrary<SubscriptionId> = fc.oneof(fc.string({ minLength: 1, maxLength: 64 }), fc.maxSafeInteger());

/** Bytes that are often text (the utf8 encoding), sometimes text with control characters or not UTF-8 (base64). */
const textOrBytes = (maxLength: number, minLength = 0): fc.Arbitrary<Buffer> =>
  fc.oneof(fc.string({ minLength, maxLength, unit: 'grapheme' }).map((text) => Buffer.from(text, 'utf8')), bytes(maxLength, minLength));

function entryOf(seq: number, ops: readonly Op[]): Entry {
  return { seq, timeMs: 1_700_000_000_000 + seq, ops, prevHash: Buffer.alloc(32), hash: Buffer.alloc(32) };
}

/** The changes a watch of every key must decode from `ops` at `seq` (range deletes clipped to the whole key space). */
function expectedChanges(ops: readonly Op[], seq: number, keysOnly: boolean, authors?: readonly (string | undefined)[]): WatchChange[] {
  const changes: WatchChange[] = [];
  ops.forEach((op, index) => {
    const author = authors === undefined ? {} : { author: authors[index] ?? null };
    if (op.type === 'put') changes.push({ type: 'put', key: op.key, value: keysOnly ? undefined : op.value, modSeq: seq, ...author });
    else if (op.type === 'delete') changes.push({ type: 'delete', key: op.key, modSeq: seq, ...author });
    else if (op.end.length === 0 || Buffer.compare(op.start, op.end) < 0)
      changes.push({ type: 'deleteRange', start: op.start, end: op.end.length === 0 ? null : op.end, modSeq: seq, ...author });
  });
  return changes;
}

describe('watch api', () => {
  test('watch api: every events message the node encodes decodes to the bytes of the entry', () => {
    const op = opArbitrary(48, 64).chain((template) =>
      template.type === 'put'
        ? fc.tuple(textOrBytes(48, 1), textOrBytes(64)).map(([key, value]): Op => ({ type: 'put', key, value }))
        : fc.constant(template),
    );
    assertProperty(
      fc.property(
        fc.array(fc.tuple(op, fc.option(fc.constantFrom('deploy-bot', 'CN=ops "é"', 'a\nb'), { nil: undefined })), { maxLength: 12 }),
        fc.integer({ min: 1, max: 2 ** 40 }),
        idArbitrary,
        fc.boolean(),
        fc.boolean(),
        (opsWithAuthors, seq, id, keysOnly, authors) => {
          const ops = opsWithAuthors.map(([op]) => op);
          const perOp = opsWithAuthors.map(([, author]) => author);
          const entry = { ...entryOf(seq, ops), authors: authorRuns(perOp) };
          const selection = canonicalSelection([Buffer.alloc(0)], { puts: true, deletes: true, keysOnly, authors });
          const text = eventsHead(JSON.stringify(id)) + eventsBody(seq, entry.timeMs, entry.hash.toString('hex'), selectEvents(entry, selection, new EventCache(entry)));
          assert.deepEqual(parseServerMessage(text), {
            type: 'events',
            id,
            seq,
            timeMs: entry.timeMs,
            hash: entry.hash.toString('hex'),
            events: expectedChanges(ops, seq, keysOnly, authors ? perOp : undefined),
          });
        },
      ),
    );
  });

  test('watch api: snapshot pages and the other server messages decode to what was encoded', () => {
    const record = fc.record({ key: textOrBytes(48, 1), value: textOrBytes(64), createSeq: fc.integer({ min: 1, max: 1000 }), modSeq: fc.integer({ min: 1, max: 1000 }), version: fc.integer({ min: 1, max: 1000 }) });
    assertProperty(
      fc.property(fc.array(record, { maxLength: 8 }), fc.nat(), idArbitrary, fc.boolean(), fc.boolean(), (records, seq, id, keysOnly, done) => {
        const idJson = JSON.stringify(id);
        const hash = Buffer.alloc(32, seq % 256).toString('hex');
        const page = parseServerMessage(snapshotMessage(idJson, seq, records.map((item) => snapshotItemJson(item, keysOnly)), done, false, hash));
        const items = records.map((item) => ({ ...item, value: keysOnly ? undefined : item.value }));
        assert.deepEqual(page, { type: 'snapshot', id, seq, done, items, ...(done ? { hash } : {}) });
        assert.deepEqual(parseServerMessage(subscribedMessage(idJson, seq + 1)), { type: 'subscribed', id, fromSeq: seq + 1 });
        assert.deepEqual(parseServerMessage(progressMessage(idJson, seq, hash)), { type: 'progress', id, seq, hash });
        assert.deepEqual(parseServerMessage(progressMessage(idJson, seq, undefined)), { type: 'progress', id, seq });
        assert.deepEqual(parseServerMessage(unsubscribedMessage(idJson)), { type: 'unsubscribed', id });
        assert.deepEqual(parseServerMessage(errorMessage('UNKNOWN_ID', `no "${seq}"\n`, idJson)), { type: 'error', id, code: 'UNKNOWN_ID', message: `no "${seq}"\n` });
        assert.deepEqual(parseServerMessage(errorMessage('INVALID_JSON', 'bad')), { type: 'error', id: undefined, code: 'INVALID_JSON', message: 'bad' });
      }),
    );
  });

  test('watch api: a subscribe the client encodes is the request the node parses', () => {
    const prefix = fc.oneof(fc.string({ maxLength: 40 }), bytes(40));
    const filters = fc.option(fc.record({ puts: fc.boolean(), deletes: fc.boolean(), keysOnly: fc.boolean(), authors: fc.boolean() }, { requiredKeys: [] }), { nil: undefined });
    assertProperty(
      fc.property(fc.array(prefix, { minLength: 1, maxLength: 16 }), fc.option(fc.maxSafeInteger().filter((seq) => seq >= 1), { nil: undefined }), idArbitrary, filters, (prefixes, fromSeq, id, wanted) => {
        fc.pre(wanted?.puts !== false || wanted.deletes !== false);
        const parsed = parseClientMessage(subscribeMessage({ id, prefixes, fromSeq, filters: wanted }), WATCH_MESSAGE_LIMITS);
        assert.equal(parsed.type, 'subscribe');
        assert.ok(parsed.type === 'subscribe');
        assert.equal(parsed.id, id);
        assert.equal(parsed.fromSeq, fromSeq);
        // Text prefixes are listed first, then the binary ones.
        const sent = [...prefixes.filter((p) => typeof p === 'string'), ...prefixes.filter((p) => typeof p !== 'string')].map((p) => Buffer.from(p));
        assert.deepEqual(parsed.prefixes, sent);
        assert.deepEqual(parsed.filters, { puts: wanted?.puts ?? true, deletes: wanted?.deletes ?? true, keysOnly: wanted?.keysOnly ?? false, authors: wanted?.authors ?? false });
      }),
    );
  });

  test('watch api: malformed server messages are refused with an error naming the field and the rule', () => {
    const put = (fields: Record<string, unknown>): string =>
      JSON.stringify({ type: 'events', id: 1, seq: 5, timeMs: 9, events: [{ type: 'put', key: 'a', keyEncoding: 'utf8', value: 'v', valueEncoding: 'utf8', modSeq: 5, ...fields }] });
    const cases: [string, string][] = [
      ['{"type":', 'message is not JSON: '],
      ['[1]', 'message must be a JSON object with a "type"'],
      ['{"id":1}', 'message.type is missing; a node sends subscribed, events, snapshot, progress, unsubscribed or error'],
      ['{"type":"welcome","id":1}', 'message.type is "welcome"; a node sends subscribed, events, snapshot, progress, unsubscribed or error'],
      ['{"type":"subscribed","fromSeq":1}', 'subscribed.id is missing'],
      ['{"type":"subscribed","id":"","fromSeq":1}', 'subscribed.id must be a non-empty string or a safe integer'],
      ['{"type":"subscribed","id":1.5,"fromSeq":1}', 'subscribed.id must be a non-empty string or a safe integer'],
      ['{"type":"subscribed","id":1,"fromSeq":0}', 'subscribed.fromSeq must be an integer >= 1'],
      ['{"type":"progress","id":1,"seq":"7"}', 'progress.seq must be an integer >= 0'],
      ['{"type":"events","id":1,"seq":5,"timeMs":9}', 'events.events is missing'],
      ['{"type":"events","id":1,"seq":5,"timeMs":9,"events":{}}', 'events.events must be an array'],
      ['{"type":"events","id":1,"seq":5,"timeMs":9,"events":[null]}', 'events.events[0] must be an object'],
      [put({ keyEncoding: 'hex' }), 'events.events[0].keyEncoding must be "utf8" or "base64"'],
      [put({ key: 7 }), 'events.events[0].key must be a string'],
      [put({ valueEncoding: 'base64', value: 'not base64!' }), 'events.events[0].value must be standard base64 (its encoding says base64)'],
      [put({ modSeq: -1 }), 'events.events[0].modSeq must be an integer >= 1'],
      [put({ type: 'merge' }), 'events.events[0].type is "merge"; an event is "put", "delete" or "deleteRange"'],
      [put({ type: 'deleteRange', start: 'a', startEncoding: 'utf8', end: null, endEncoding: 'utf8' }), 'events.events[0].endEncoding must be null when end is null'],
      [put({ type: 'deleteRange', start: 'a', startEncoding: 'utf8' }), 'events.events[0].end is missing'],
      ['{"type":"snapshot","id":1,"seq":3,"items":[]}', 'snapshot.done is missing'],
      ['{"type":"snapshot","id":1,"seq":3,"items":[],"done":1}', 'snapshot.done must be true or false'],
      ['{"type":"snapshot","id":1,"seq":3,"done":true,"items":[{"key":"a","keyEncoding":"utf8","createSeq":1,"modSeq":1,"version":0}]}', 'snapshot.items[0].version must be an integer >= 1'],
      ['{"type":"error","id":1,"message":"m"}', 'error.code is missing'],
      ['{"type":"error","code":"X","message":null}', 'error.message must be a string'],
    ];
    for (const [text, message] of cases) {
      assert.throws(
        () => parseServerMessage(text),
        (error: unknown) => {
          assert.ok(error instanceof WatchServerMessageError, `${text}: ${String(error)}`);
          assert.equal(error.code, 'PROTOCOL');
          if (message.endsWith(': ')) assert.ok(error.message.startsWith(message), `${text}: ${error.message}`);
          else assert.equal(error.message, message, text);
          return true;
        },
      );
    }
  });

  test('watch api: values nested 20,000 deep are refused with a bounded description, by either side, not a stack overflow', () => {
    // The audit of 2026-12-06: a `type` that was an array 20,000 deep (40 KB) made the node's error message
    // JSON.stringify it, which threw RangeError out of the socket's handler and ended the process.
    const depth = 20_000;
    const deepArray = `${'['.repeat(depth)}${']'.repeat(depth)}`;
    const deepObject = `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    for (const deep of [deepArray, deepObject]) {
      const kind = deep === deepArray ? 'an array of 1 items' : 'an object';
      assert.throws(
        () => parseClientMessage(`{"type":${deep}}`, WATCH_MESSAGE_LIMITS),
        (error: unknown) => error instanceof WatchProtocolError && error.code === 'UNKNOWN_MESSAGE_TYPE' && error.message.startsWith(`unknown message type ${kind};`),
      );
      assert.throws(
        () => parseServerMessage(`{"type":${deep}}`),
        (error: unknown) => error instanceof WatchServerMessageError && error.message.startsWith(`message.type is ${kind};`),
      );
      const events = `{"type":"events","id":1,"seq":5,"timeMs":9,"events":[{"type":${deep},"key":"a","keyEncoding":"utf8","modSeq":5}]}`;
      assert.throws(
        () => parseServerMessage(events),
        (error: unknown) => error instanceof WatchServerMessageError && error.message.startsWith(`events.events[0].type is ${kind};`),
      );
    }
    // What a refusal quotes of a string (a type, an unknown field's name) is cut: the answer stays small.
    const long = 'x'.repeat(100_000);
    for (const text of [JSON.stringify({ type: long }), JSON.stringify({ type: 'unsubscribe', id: 1, [long]: 1 })])
      assert.throws(
        () => parseClientMessage(text, WATCH_MESSAGE_LIMITS),
        (error: unknown) => error instanceof WatchProtocolError && error.message.length < 300 && error.message.includes('(100000 characters)'),
      );
  });

  test('watch api: a message over the size limit is refused before it is parsed, counted in UTF-8 bytes', () => {
    const refused = (text: string, bytesMax: number): string => {
      try {
        parseServerMessage(text, bytesMax);
      } catch (error) {
        assert.ok(error instanceof WatchServerMessageError);
        return error.message;
      }
      assert.fail('accepted');
    };
    const progress = '{"type":"progress","id":1,"seq":12345}';
    assert.deepEqual(parseServerMessage(progress, progress.length), { type: 'progress', id: 1, seq: 12345 });
    assert.equal(refused(progress, progress.length - 1), `message of ${progress.length} bytes; at most ${progress.length - 1} bytes are accepted`);
    // 'é' is one UTF-16 unit but two UTF-8 bytes: the limit is in bytes.
    const accented = `{"type":"progress","id":"${'é'.repeat(20)}","seq":1}`;
    assert.equal(refused(accented, accented.length + 19), `message of ${accented.length + 20} bytes; at most ${accented.length + 19} bytes are accepted`);
    assert.deepEqual(parseServerMessage(accented, accented.length + 20), { type: 'progress', id: 'é'.repeat(20), seq: 1 });
  });

  test('watch api: random input only ever raises WatchServerMessageError', () => {
    const json = fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value));
    const shaped = fc
      .record({ type: fc.constantFrom('subscribed', 'events', 'snapshot', 'progress', 'unsubscribed', 'error'), rest: fc.dictionary(fc.constantFrom('id', 'seq', 'fromSeq', 'timeMs', 'events', 'items', 'done', 'code', 'message'), fc.jsonValue({ maxDepth: 3 })) })
      .map(({ type, rest }) => JSON.stringify({ ...rest, type }));
    assertProperty(
      fc.property(fc.oneof(fc.string(), json, shaped), (text) => {
        try {
          parseServerMessage(text);
        } catch (error) {
          assert.ok(error instanceof WatchServerMessageError, `${text}: ${String(error)}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('watch api: the resume cursor moves past events, progress and completed snapshots only', () => {
    const cursor = new WatchResumeCursor(undefined);
    assert.equal(cursor.nextSeq, undefined);
    assert.equal(cursor.accept({ type: 'subscribed', id: 1, fromSeq: 10 }), true);
    assert.equal(cursor.nextSeq, 10);
    assert.equal(cursor.accept({ type: 'events', id: 1, seq: 12, timeMs: 0, events: [] }), true);
    assert.equal(cursor.nextSeq, 13);
    assert.equal(cursor.accept({ type: 'progress', id: 1, seq: 12 }), true, 'a heartbeat at the last seq received');
    assert.equal(cursor.nextSeq, 13);
    assert.equal(cursor.accept({ type: 'progress', id: 1, seq: 20 }), true);
    assert.equal(cursor.nextSeq, 21);
    // A reconnect subscribes from the cursor, which stays where it is.
    cursor.reset();
    assert.equal(cursor.accept({ type: 'subscribed', id: 1, fromSeq: 21 }), true);
    assert.equal(cursor.nextSeq, 21);

    const snapshot = new WatchResumeCursor(1);
    assert.equal(snapshot.accept({ type: 'subscribed', id: 1, fromSeq: 1 }), true);
    assert.equal(snapshot.accept({ type: 'snapshot', id: 1, seq: 50, items: [], done: false }), true);
    assert.equal(snapshot.inSnapshot, true);
    assert.equal(snapshot.accept({ type: 'progress', id: 1, seq: 50 }), false, 'progress does not run ahead of a snapshot');
    assert.equal(snapshot.nextSeq, 51, 'a snapshot cut off before done resumes after its seq...');
    assert.equal(snapshot.afterHash, WATCH_HASH_NO_STATE, '...with a hash no entry has, for a whole snapshot');
    snapshot.reset();
    assert.equal(snapshot.inSnapshot, false);
    assert.equal(snapshot.accept({ type: 'subscribed', id: 1, fromSeq: 51 }), true);
    assert.equal(snapshot.accept({ type: 'snapshot', id: 1, seq: 52, items: [], done: false }), true);
    assert.equal(snapshot.accept({ type: 'snapshot', id: 1, seq: 52, items: [], done: true }), true);
    assert.equal(snapshot.nextSeq, 53);
  });

  test('watch api: a snapshot after events or a completed snapshot is a reset, at any seq; a page marked begin starts a snapshot over', () => {
    const snapshot = (seq: number, done: boolean, begin?: true): ServerMessage => ({ type: 'snapshot', id: 1, seq, items: [], done, ...(begin ? { begin } : {}) });
    const cursor = new WatchResumeCursor(10);
    cursor.accept({ type: 'subscribed', id: 1, fromSeq: 10 });
    cursor.accept({ type: 'events', id: 1, seq: 60, timeMs: 0, events: [] });
    // Below what was received: the entries above the reset belonged to a chain the node no longer has.
    assert.equal(cursor.startsSnapshot(snapshot(20, false, true)), true);
    assert.equal(cursor.accept(snapshot(20, false, true)), true);
    assert.equal(cursor.nextSeq, 21, 'a reset moves the cursor back at its first page: cut off before done, it resumes there...');
    assert.equal(cursor.afterHash, WATCH_HASH_NO_STATE, '...asking for a whole snapshot, not for the entries after 60 over a part of a state');
    assert.equal(cursor.startsSnapshot(snapshot(20, true)), false, 'a later page of the same snapshot');
    assert.equal(cursor.accept(snapshot(20, true)), true);
    assert.equal(cursor.nextSeq, 21, 'the done page moves the cursor to the reset, back or forward');
    // After a completed snapshot, another (unmarked, from an older node) above it.
    assert.equal(cursor.startsSnapshot(snapshot(40, true)), true);
    assert.equal(cursor.accept(snapshot(40, true)), true);
    assert.equal(cursor.nextSeq, 41);
    // Inside an open snapshot, a page marked begin starts over, at another seq.
    assert.equal(cursor.accept(snapshot(50, false, true)), true);
    assert.equal(cursor.startsSnapshot(snapshot(45, false, true)), true);
    assert.equal(cursor.accept(snapshot(45, false, true)), true);
    assert.equal(cursor.accept(snapshot(45, true)), true);
    assert.equal(cursor.nextSeq, 46);
    // The marker on the wire: only on first pages, and a boolean.
    assert.deepEqual(parseServerMessage(snapshotMessage('1', 7, [], false, true, '')), { type: 'snapshot', id: 1, seq: 7, items: [], done: false, begin: true });
    assert.deepEqual(parseServerMessage(snapshotMessage('1', 7, [], true, false, '00'.repeat(32))), {
      type: 'snapshot',
      id: 1,
      seq: 7,
      items: [],
      done: true,
      hash: '00'.repeat(32),
    });
    assert.throws(() => parseServerMessage('{"type":"snapshot","id":1,"seq":7,"items":[],"done":true,"begin":"yes"}'), /snapshot\.begin must be true or false/);
  });

  test('watch api: the resume cursor refuses messages that would make a client skip or repeat entries', () => {
    const connected = (fromSeq: number | undefined, ...messages: ServerMessage[]): WatchResumeCursor => {
      const cursor = new WatchResumeCursor(fromSeq);
      for (const message of messages) cursor.accept(message);
      return cursor;
    };
    const events = (seq: number): ServerMessage => ({ type: 'events', id: 1, seq, timeMs: 0, events: [] });
    const snapshot = (seq: number, done: boolean): ServerMessage => ({ type: 'snapshot', id: 1, seq, items: [], done });
    const progress = (seq: number): ServerMessage => ({ type: 'progress', id: 1, seq });
    const subscribed = (fromSeq: number): ServerMessage => ({ type: 'subscribed', id: 1, fromSeq });
    const cases: [WatchResumeCursor, ServerMessage, RegExp][] = [
      [connected(10), subscribed(50), /subscribed\.fromSeq is 50; the subscription asked for 10, so entries would be skipped/],
      [connected(10), subscribed(5), /so entries would be repeated/],
      [connected(undefined, subscribed(10)), subscribed(10), /subscribed came twice on one connection/],
      [connected(10), events(10), /events came before "subscribed"/],
      [connected(10, subscribed(10), events(12)), events(12), /events\.seq is 12; everything up to 12 was received/],
      [connected(10, subscribed(10), progress(20)), progress(19), /progress\.seq is 19; everything up to 20 was received/],
      [connected(1, subscribed(1), snapshot(30, false)), snapshot(31, true), /snapshot\.seq is 31; the pages before it were at 30/],
      [connected(1, subscribed(1), snapshot(30, false)), events(31), /events came inside a snapshot/],
      // After a reset below what was received, the cursor holds the node to the reset's seq.
      [connected(20, subscribed(20), events(30), snapshot(25, true)), progress(24), /progress\.seq is 24; everything up to 25 was received/],
      [connected(20, subscribed(20), events(30), snapshot(25, true)), events(25), /events\.seq is 25; everything up to 25 was received/],
    ];
    for (const [cursor, message, pattern] of cases)
      assert.throws(() => cursor.accept(message), (error: unknown) => error instanceof WatchServerMessageError && error.code === 'PROTOCOL' && pattern.test(error.message), String(pattern));
  });

  test('watch api: across cut connections, a watch delivers every selected entry once, in order, after at most one whole snapshot', () => {
    const scenario = fc.record({
      head: fc.integer({ min: 1, max: 40 }),
      selectedBits: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
      retainedFrom: fc.integer({ min: 1, max: 41 }),
      fromSeq: fc.integer({ min: 1, max: 41 }),
      dice: fc.array(fc.nat(99), { minLength: 64, maxLength: 64 }),
    });
    assertProperty(
      fc.property(scenario, ({ head, selectedBits, retainedFrom, fromSeq, dice }) => {
        retainedFrom = Math.min(retainedFrom, head + 1);
        fromSeq = Math.min(fromSeq, head + 1);
        const selected = (seq: number): boolean => selectedBits[seq - 1]!;
        let roll = 0;
        const die = (): number => dice[roll++ % dice.length]!;
        const cursor = new WatchCursor(fromSeq, true);
        const delivered: WatchEvent[] = [];
        for (let connection = 0; ; connection++) {
          const last = connection === 20;
          cursor.reset();
          const from = cursor.nextSeq!;
          // What a node sends to a subscription from `from`, by the protocol.
          const messages: ServerMessage[] = [{ type: 'subscribed', id: 1, fromSeq: from }];
          let next = from;
          // A snapshot when the log does not reach back to `from`, or when the subscribe's afterHash is not the node's
          // entry from - 1: a cursor cut off inside a snapshot sends one that no entry has.
          if (from < retainedFrom || cursor.afterHash === WATCH_HASH_NO_STATE) {
            const snapshotSeq = retainedFrom - 1 + (die() % (head - retainedFrom + 2));
            const pages = 1 + (die() % 3);
            for (let page = 0; page < pages; page++) {
              messages.push({ type: 'snapshot', id: 1, seq: snapshotSeq, items: [{ key: Buffer.from(`p${page}`), value: undefined, createSeq: 1, modSeq: 1, version: 1 }], done: page === pages - 1 });
              if (die() < 30) messages.push({ type: 'progress', id: 1, seq: snapshotSeq });
            }
            next = snapshotSeq + 1;
          }
          for (let seq = next; seq <= head; seq++) {
            if (selected(seq)) messages.push({ type: 'events', id: 1, seq, timeMs: seq, events: [{ type: 'put', key: Buffer.from(`k${seq}`), value: Buffer.from('v'), modSeq: seq }] });
            if (die() < 30 || (last && seq === head)) messages.push({ type: 'progress', id: 1, seq });
          }
          if (last && head < next) messages.push({ type: 'progress', id: 1, seq: head });
          const cut = last ? messages.length : die() % (messages.length + 1);
          for (const message of messages.slice(0, cut)) delivered.push(...cursor.onMessage(message).events);
          if (last) break;
        }

        assert.equal(cursor.nextSeq, head + 1, 'after a whole stream, the watch resumes after the head');
        // Each snapshot begun and abandoned is followed by a new begin before any change; the last one completes.
        const changes = delivered.filter((event) => event.type === 'put');
        const ends = delivered.filter((event) => event.type === 'snapshotEnd');
        let startAfter = fromSeq - 1;
        if (fromSeq < retainedFrom) {
          assert.equal(ends.length, 1, 'one completed snapshot');
          const endIndex = delivered.indexOf(ends[0]!);
          assert.ok(delivered.slice(0, endIndex).every((event) => event.type !== 'put'), 'no change before the snapshot completes');
          startAfter = ends[0]!.seq;
        } else assert.ok(delivered.every((event) => !event.type.startsWith('snapshot')), 'no snapshot when the log reaches back');
        const expected: number[] = [];
        for (let seq = startAfter + 1; seq <= head; seq++) if (selected(seq)) expected.push(seq);
        assert.deepEqual(changes.map((event) => event.seq), expected, 'every selected entry once, in order');
        const progress = delivered.filter((event) => event.type === 'progress').map((event) => event.seq);
        assert.deepEqual(progress, [...progress].sort((a, b) => a - b), 'progress never goes back');
      }),
      { numRuns: 500 },
    );
  });
});
