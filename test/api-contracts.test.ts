/**
 * The wire contracts of src/api/: the transaction parser and formatter agree (seeded property), the one bytes rule,
 * the error tables, and the lint rule that keeps the contracts and the client free of node code.
 *
 * Seeded (test/support/seed.ts): a failure names the MERCURY_TEST_SEED that reproduces it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  ERROR_STATUS,
  ErrorCode,
  KEY_BYTES_MAX,
  MercuryError,
  ProtocolErrorCode,
  RefuseReason,
  VALUE_BYTES_MAX_DEFAULT,
  decodeKeyPath,
  encodeJsonBytes,
  encodeKeyPath,
  parseServerMessage,
  formatTxn,
  parseTxn,
  prefixEnd,
  valueTooLarge,
  type Txn,
  type TxnCompare,
  type TxnOp,
} from '../src/api/index.js';
import { isStandardBase64 } from '../src/api/bytes.js';
import { TxnBuilder, cmp, op } from '../src/client/index.js';
import { assertProperty } from './support/seed.js';

// Bytes biased toward the interesting cases of the bytes rule: plain text, text with control characters, invalid UTF-8.
const bytes = (minLength: number, maxLength: number): fc.Arbitrary<Buffer> =>
  fc.oneof(
    fc.uint8Array({ minLength, maxLength }).map((array) => Buffer.from(array)),
    fc.string({ minLength, maxLength }).map((text) => Buffer.from(text, 'utf8')),
    fc.string({ unit: 'binary', minLength, maxLength }).map((text) => Buffer.from(text, 'utf8')),
    fc.array(fc.constantFrom('a', '/', '\t', '\n', '\r', '\u0000', '\u0001', '\u001f', '\u007f', 'é', '€'), { minLength, maxLength }).map((chars) => Buffer.from(chars.join(''), 'utf8')),
  ).filter((buffer) => buffer.length >= minLength && buffer.length <= maxLength);
const key = bytes(1, 16);
const operator = fc.constantFrom('=' as const, '!=' as const, '<' as const, '>' as const);

const txnOp: fc.Arbitrary<TxnOp> = fc.oneof(
  fc.record({ key, value: bytes(0, 32) }).map(({ key, value }): TxnOp => ({ type: 'put', key, value })),
  key.map((key): TxnOp => ({ type: 'delete', key })),
  // A bounded range ends after its start (parseTxn refuses an empty range).
  fc
    .record({ start: key, end: fc.oneof(key, fc.constant(Buffer.alloc(0))) })
    .filter(({ start, end }) => end.length === 0 || Buffer.compare(start, end) < 0)
    .map(({ start, end }): TxnOp => ({ type: 'deleteRange', start, end })),
);
const txnCompare: fc.Arbitrary<TxnCompare> = fc.oneof(
  fc.record({ key, exists: fc.boolean() }).map(({ key, exists }): TxnCompare => ({ key, target: 'exists', exists })),
  fc.record({ key, operator, value: bytes(0, 32) }).map(({ key, operator, value }): TxnCompare => ({ key, target: 'value', operator, value })),
  fc
    .record({ key, operator, target: fc.constantFrom('modSeq' as const, 'version' as const, 'createSeq' as const), number: fc.nat() })
    .map(({ key, operator, target, number }): TxnCompare => ({ key, target, operator, number })),
);
const txn: fc.Arbitrary<Txn> = fc.record({
  compares: fc.array(txnCompare, { maxLength: 4 }),
  success: fc.array(txnOp, { maxLength: 4 }),
  failure: fc.array(txnOp, { maxLength: 4 }),
}).map((t): Txn => ({ ...t })); // fc.record builds null-prototype objects; deepEqual compares like with like

/** Through JSON text, as on the wire. */
const wire = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

describe('api txn: one parser, one formatter', () => {
  test('api txn: parseTxn(formatTxn(t)) is t, through JSON text', () => {
    assertProperty(fc.property(txn, (t) => assert.deepEqual(parseTxn(wire(formatTxn(t))), t)));
  });

  test('api txn: every byte field of the formatted form follows the bytes rule', () => {
    assertProperty(
      fc.property(txn, (t) => {
        const json = formatTxn(t) as unknown as Record<string, Record<string, unknown>[]>;
        for (const item of [...json.compare!, ...json.success!, ...json.failure!]) {
          for (const name of ['key', 'value', 'start', 'end']) {
            if (item[name] === undefined) continue;
            assert.ok(item[`${name}Encoding`] === 'utf8' || item[`${name}Encoding`] === 'base64', `${name}Encoding of ${JSON.stringify(item)}`);
            assert.equal(item[`${name}Base64`], undefined);
          }
        }
      }),
    );
  });

  test('api txn: the client builder sends what the formatter makes of the same transaction', () => {
    const binary = Buffer.from([0x62, 0xff, 0x00]);
    const built = new TxnBuilder(() => Promise.reject(new Error('not sent')))
      .compare(cmp.exists('a'), cmp.missing(binary), cmp.value('a', '!=', 'x\u0001'), cmp.modSeq('a', '<', 3), cmp.version('a', '>', 1), cmp.createSeq('a', '=', 2))
      .success(op.put('a', 'é'), op.delete(binary), op.deleteRange('r/', 'r0'), op.deleteRange('s/'), op.deletePrefix('p/'))
      .failure(op.put(binary, binary))
      .toJSON();
    const b = (text: string): Buffer => Buffer.from(text, 'utf8');
    const expected: Txn = {
      compares: [
        { key: b('a'), target: 'exists', exists: true },
        { key: binary, target: 'exists', exists: false },
        { key: b('a'), target: 'value', operator: '!=', value: b('x\u0001') },
        { key: b('a'), target: 'modSeq', operator: '<', number: 3 },
        { key: b('a'), target: 'version', operator: '>', number: 1 },
        { key: b('a'), target: 'createSeq', operator: '=', number: 2 },
      ],
      success: [
        { type: 'put', key: b('a'), value: b('é') },
        { type: 'delete', key: binary },
        { type: 'deleteRange', start: b('r/'), end: b('r0') },
        { type: 'deleteRange', start: b('s/'), end: Buffer.alloc(0) },
        { type: 'deleteRange', start: b('p/'), end: prefixEnd(b('p/')) },
      ],
      failure: [{ type: 'put', key: binary, value: binary }],
    };
    assert.deepEqual(built, formatTxn(expected));
    assert.deepEqual(parseTxn(wire(built)), expected);
  });

  test('api txn: a byte field may be text, text with its encoding, or base64, and only one of them', () => {
    const put = (fields: Record<string, unknown>): unknown => ({ success: [{ op: 'put', value: 'v', ...fields }] });
    for (const fields of [{ key: 'k\u00ff' }, { key: 'k\u00ff', keyEncoding: 'utf8' }, { key: Buffer.from('k\u00ff').toString('base64'), keyEncoding: 'base64' }, { keyBase64: Buffer.from('k\u00ff').toString('base64') }]) {
      const parsed = parseTxn(put(fields));
      assert.deepEqual(parsed.success[0], { type: 'put', key: Buffer.from('k\u00ff', 'utf8'), value: Buffer.from('v') }, JSON.stringify(fields));
    }
    const refused: [Record<string, unknown>, RegExp][] = [
      [{ key: 'a', keyBase64: 'YQ==' }, /give either "key" or "keyBase64"/],
      [{ keyEncoding: 'utf8' }, /"keyEncoding" is given without "key"/],
      [{ key: 'a', keyEncoding: 'hex' }, /keyEncoding must be "utf8" or "base64"/],
      [{ key: '!!', keyEncoding: 'base64' }, /success\[0\]\.key \(keyEncoding "base64"\) must be a standard base64 string/],
      [{ keyBase64: '!!' }, /success\[0\]\.keyBase64 must be a standard base64 string/],
    ];
    for (const [fields, message] of refused) {
      assert.throws(() => parseTxn(put(fields)), (error: unknown) => error instanceof MercuryError && error.code === 'INVALID_ARGUMENT' && message.test(error.message));
    }
  });

  test('api txn: limits name the field: key size, value size against the given maximum', () => {
    assert.throws(() => parseTxn({ success: [{ op: 'put', key: 'k'.repeat(KEY_BYTES_MAX + 1), value: '' }] }), { code: 'KEY_TOO_LARGE', message: /^success\[0\]\.key is 1025 bytes/ });
    assert.throws(() => parseTxn({ compare: [{ key: 'a', value: 'xxxx' }] }, 3), { code: 'VALUE_TOO_LARGE', message: /^compare\[0\]\.value is 4 bytes; this node accepts at most 3 bytes/ });
  });
});

describe('api bytes: one rule for bytes in JSON', () => {
  test('api bytes: text without control characters is utf8; tab, LF and CR are text too', () => {
    for (const text of ['', 'plain', 'é€😀', 'a\tb\nc\r\n', '\u007f']) assert.deepEqual(encodeJsonBytes(Buffer.from(text)), { text, encoding: 'utf8' });
  });

  test('api bytes: control characters and invalid UTF-8 are base64', () => {
    for (const buffer of [Buffer.from('a\u0000b'), Buffer.from('\u0001'), Buffer.from('x\u001b[0m'), Buffer.from([0xff]), Buffer.from([0xc3])])
      assert.deepEqual(encodeJsonBytes(buffer), { text: buffer.toString('base64'), encoding: 'base64' });
  });

  test('api bytes: any bytes come back from their JSON form; the JSON text is at most 4/3 of the bytes plus quotes', () => {
    assertProperty(
      fc.property(bytes(0, 64), (buffer) => {
        const { text, encoding } = encodeJsonBytes(buffer);
        assert.deepEqual(Buffer.from(text, encoding), buffer);
        // Escapes are what base64 avoids: a text field holds no character that JSON writes as \u00XX.
        if (encoding === 'utf8') assert.ok(!/\\u00[01]/.test(JSON.stringify(text)));
      }),
    );
  });

  // Found by an audit (2026-12-06): the base64 check was one regular expression of groups of four, and V8 ran out of
  // stack on it past about 4.47 million characters (a value of some 3.2 MiB): every watch client given such a value
  // died of the RangeError, and such a transaction was answered 500.
  test('api bytes: base64 of the largest values is checked and decoded, in a watch message and a transaction alike', () => {
    const value = Buffer.alloc(16 * 1024 * 1024, 0x01); // the largest value a node accepts; control bytes: base64
    const { text, encoding } = encodeJsonBytes(value);
    assert.equal(encoding, 'base64');
    assert.ok(isStandardBase64(text));
    const event = { type: 'put', key: 'k', keyEncoding: 'utf8', value: text, valueEncoding: 'base64', modSeq: 1 };
    const message = parseServerMessage(JSON.stringify({ type: 'events', id: 1, seq: 1, timeMs: 0, events: [event] }), 64 * 1024 * 1024);
    const change = message.type === 'events' ? message.events[0] : undefined;
    assert.ok(change?.type === 'put' && change.value?.equals(value) === true);
    const put = parseTxn(JSON.parse(JSON.stringify({ success: [{ op: 'put', key: 'k', value: text, valueEncoding: 'base64' }] })) as unknown, value.length).success[0];
    assert.ok(put?.type === 'put' && put.value.equals(value));
    // The same answers as the rule written as one expression, on the edges of padding and alphabet.
    const rule = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
    for (const candidate of ['', 'a', 'ab==', 'abc=', 'abcd', '====', 'a===', 'ab=c', 'abc==', 'YQ==', '+/+/', 'ab-_', 'abcd\n', 'abcda===', 'abcdab=='])
      assert.equal(isStandardBase64(candidate), rule.test(candidate), JSON.stringify(candidate));
  });

  test('api keys: a key survives its URL path form', () => {
    assertProperty(fc.property(key, (bytes) => assert.deepEqual(decodeKeyPath(encodeKeyPath(bytes)), bytes)));
  });
});

describe('api errors: the tables', () => {
  test('api errors: every code has an HTTP error status, and the table names no other code', () => {
    assert.deepEqual(Object.keys(ERROR_STATUS).sort(), Object.values(ErrorCode).sort());
    for (const [name, code] of Object.entries(ErrorCode)) {
      assert.equal(name, code);
      const status = ERROR_STATUS[code];
      assert.ok(Number.isInteger(status) && status >= 400 && status <= 599, `${code}: ${status}`);
      assert.equal(new MercuryError(code, 'm').status, status);
    }
  });

  test('api errors: VALUE_TOO_LARGE is one constructor with the limit as a detail', () => {
    const error = valueTooLarge(VALUE_BYTES_MAX_DEFAULT + 1, VALUE_BYTES_MAX_DEFAULT, 'success[2].value');
    assert.equal(error.code, 'VALUE_TOO_LARGE');
    assert.equal(error.status, 413);
    assert.deepEqual(error.details, { limit: VALUE_BYTES_MAX_DEFAULT });
    assert.match(error.message, /^success\[2\]\.value is 1048577 bytes; this node accepts at most 1048576 bytes/);
  });

  test('api errors: refuse reasons are distinct bytes; protocol error codes are their names', () => {
    const reasons = Object.values(RefuseReason);
    assert.equal(new Set(reasons).size, reasons.length);
    for (const reason of reasons) assert.ok(Number.isInteger(reason) && reason >= 1 && reason <= 255);
    for (const [name, code] of Object.entries(ProtocolErrorCode)) assert.equal(name, code);
  });
});
