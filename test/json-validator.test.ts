/**
 * The bounded JSON reader of request bodies (src/api/json-validator.ts): it accepts exactly what JSON.parse accepts
 * within its limits, fed in any split of the body (one byte at a time included), refuses invalid UTF-8 and lone
 * surrogates instead of letting them become U+FFFD, and stops a hostile body after a bounded prefix. Also: the limits
 * derived for transactions (src/api/txn.ts) hold the largest legal transaction.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  ErrorCode,
  JSON_NAME_BYTES_MAX,
  JsonValidator,
  MercuryError,
  TXN_JSON_ELEMENTS_MAX,
  TXN_OPS_MAX,
  TXN_COMPARES_MAX,
  formatTxn,
  parseBoundedJson,
  parseValidatedJson,
  txnBodyBytesFor,
  txnJsonLimits,
  type JsonLimits,
  type Txn,
  type TxnOp,
} from '../src/api/index.js';
import { opEncodedBytes } from '../src/log/index.js';
import { assertProperty } from './support/seed.js';

const GENEROUS: JsonLimits = { depthMax: 64, elementsMax: 1_000_000, stringBytesMax: 1 << 24, nameBytesMax: 1 << 24 };

/** Validates `body` fed in the pieces that `cuts` (offsets) make, then parses it. */
function readSplit(body: Buffer, cuts: readonly number[], limits: JsonLimits = GENEROUS): unknown {
  const validator = new JsonValidator(limits);
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    validator.push(body.subarray(at, Math.max(at, cut)));
    at = Math.max(at, cut);
  }
  validator.push(body.subarray(at));
  validator.end();
  return parseValidatedJson(body);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    assert.ok(error instanceof MercuryError, `not a MercuryError: ${String(error)}`);
    assert.ok(Object.hasOwn(ErrorCode, error.code));
    assert.equal(error.status === 400 || error.status === 413, true, `${error.code} is ${error.status}`);
    return error.code;
  }
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    return (error as Error).message;
  }
  return '(no error)';
}

function depthOf(value: unknown): number {
  if (Array.isArray(value)) return 1 + Math.max(0, ...value.map(depthOf));
  if (typeof value === 'object' && value !== null) return 1 + Math.max(0, ...Object.values(value).map(depthOf));
  return 0;
}

function elementsOf(value: unknown): number {
  if (Array.isArray(value)) return 1 + value.reduce<number>((sum, item) => sum + elementsOf(item), 0);
  if (typeof value === 'object' && value !== null) return 1 + Object.values(value).reduce<number>((sum, item) => sum + elementsOf(item), 0);
  return 1;
}

function longestStringOf(value: unknown): number {
  if (typeof value === 'string') return Buffer.byteLength(value);
  if (Array.isArray(value)) return Math.max(0, ...value.map(longestStringOf));
  if (typeof value === 'object' && value !== null) return Math.max(0, ...Object.values(value).map(longestStringOf));
  return 0;
}

/** Bytes of the longest member name; -1 without any. */
function longestNameOf(value: unknown): number {
  if (Array.isArray(value)) return Math.max(-1, ...value.map(longestNameOf));
  if (typeof value === 'object' && value !== null)
    return Math.max(-1, ...Object.entries(value).map(([name, item]) => Math.max(Buffer.byteLength(name), longestNameOf(item))));
  return -1;
}

const json = fc.jsonValue({ stringUnit: 'binary', maxDepth: 6 });
const cutsOf = (body: Buffer): fc.Arbitrary<number[]> => fc.array(fc.integer({ min: 0, max: body.length }), { maxLength: 8 });

describe('json validator', () => {
  test('json validator: any JSON document is read as JSON.parse reads it, in any split', () => {
    assertProperty(
      fc.property(
        json.chain((value) => {
          const body = Buffer.from(JSON.stringify(value), 'utf8');
          return fc.tuple(fc.constant(body), cutsOf(body));
        }),
        ([body, cuts]) => {
          assert.deepEqual(readSplit(body, cuts), JSON.parse(body.toString('utf8')));
        },
      ),
      { numRuns: 300 },
    );
  });

  test('json validator: depth, element, string and member name limits are exact', () => {
    assertProperty(
      fc.property(json, (value) => {
        const body = Buffer.from(JSON.stringify(value), 'utf8');
        const depth = depthOf(value);
        const elements = elementsOf(value);
        const longest = longestStringOf(value);
        const longestName = longestNameOf(value);
        const validator = new JsonValidator(GENEROUS);
        validator.push(body);
        validator.end();
        assert.equal(validator.elementCount, elements);
        const exact: JsonLimits = { depthMax: Math.max(1, depth), elementsMax: elements, stringBytesMax: longest, nameBytesMax: Math.max(0, longestName) };
        assert.equal(codeOf(() => parseBoundedJson(body, exact)), undefined);
        if (depth > 1) assert.equal(codeOf(() => parseBoundedJson(body, { ...exact, depthMax: depth - 1 })), 'JSON_TOO_DEEP');
        if (elements > 1) assert.equal(codeOf(() => parseBoundedJson(body, { ...exact, elementsMax: elements - 1 })), 'JSON_TOO_MANY_ELEMENTS');
        if (longest > 0) assert.equal(codeOf(() => parseBoundedJson(body, { ...exact, stringBytesMax: longest - 1 })), 'JSON_STRING_TOO_LONG');
        if (longestName > 0) assert.equal(codeOf(() => parseBoundedJson(body, { ...exact, nameBytesMax: longestName - 1 })), 'INVALID_ARGUMENT');
      }),
      { numRuns: 300 },
    );
  });

  test('json validator: a damaged document is refused with a MercuryError exactly when JSON.parse refuses it', () => {
    const mutated = json.chain((value) => {
      const body = Buffer.from(JSON.stringify(value), 'utf8');
      return fc.tuple(
        fc.constant(body),
        fc.integer({ min: 0, max: body.length }),
        fc.integer({ min: 0, max: 3 }),
        fc.constantFrom(...Buffer.from('{}[]",:\\ -.0123456789eEtrufalsn\u00e9')),
        cutsOf(body),
      );
    });
    assertProperty(
      fc.property(mutated, ([original, at, kind, byte, cuts]) => {
        const bytes = [...original];
        if (kind === 0) bytes.splice(at, 1);
        else if (kind === 1) bytes.splice(at, 0, byte);
        else if (kind === 2) bytes.splice(at, 1, byte);
        else bytes.splice(at, bytes.length);
        const body = Buffer.from(bytes);
        let expected: unknown;
        let parses = true;
        try {
          expected = JSON.parse(body.toString('utf8'));
        } catch {
          parses = false;
        }
        const code = codeOf(() => readSplit(body, cuts));
        // A stray byte may make two names of an object equal, which JSON.parse takes (the last wins) and the validator refuses.
        if (parses && code === 'INVALID_JSON') return void assert.match(messageOf(() => readSplit(body, [])), /twice in one object/);
        // Truncation or a stray byte may leave bytes that are not UTF-8 (a cut multi-byte character): INVALID_UTF8.
        if (!parses) assert.ok(code === 'INVALID_JSON' || code === 'INVALID_UTF8', `code ${code} for ${JSON.stringify(body.toString('latin1'))}`);
        else if (code === undefined) assert.deepEqual(readSplit(body, []), expected);
        else assert.equal(code, 'INVALID_UTF8', `JSON.parse accepts ${JSON.stringify(body.toString('latin1'))} but the validator said ${code}`);
      }),
      { numRuns: 500 },
    );
  });

  test('json validator: fed one byte at a time', () => {
    const body = Buffer.from('{"a":[1,-2.5e+3,true,false,null,"x\\u00e9\\ud83d\\ude00\\n"],"b":{}}');
    const validator = new JsonValidator(GENEROUS);
    for (const byte of body) validator.push(Buffer.from([byte]));
    validator.end();
    assert.deepEqual(parseValidatedJson(body), JSON.parse(body.toString()));
    assert.equal(validator.elementCount, 9);
  });

  test('json validator: a member name given twice in one object is INVALID_JSON naming it, in any split; names compare decoded', () => {
    const refused: [string, string][] = [
      ['{"success":[{"op":"put","key":"dup","value":"x"}],"success":[]}', 'success'],
      ['{"a":1,"\\u0061":2}', 'a'],
      ['{"\\u00e9":1,"\u00e9":2}', '\u00e9'],
      ['{"a\\/b":1,"a/b":2}', 'a/b'],
      ['{"":1,"":2}', ''],
      ['[{"x":{"y":1,"z":2,"y":3}}]', 'y'],
    ];
    for (const [text, name] of refused) {
      const body = Buffer.from(text, 'utf8');
      for (let cut = 0; cut <= body.length; cut++) {
        assert.equal(codeOf(() => readSplit(body, [cut])), 'INVALID_JSON', `${text} cut at ${cut}`);
        assert.ok(messageOf(() => readSplit(body, [cut])).includes(`member name ${JSON.stringify(name)} twice in one object`), `${text}: ${messageOf(() => readSplit(body, [cut]))}`);
      }
    }
    // The same name in sibling objects, at other levels, or as a string value is no duplicate.
    for (const text of ['[{"a":1},{"a":2}]', '{"a":{"a":{"a":1}},"b":{"a":2}}', '{"a":"a","b":"a"}', '{"a":1,"A":2,"a ":3}']) {
      const body = Buffer.from(text);
      for (let cut = 0; cut <= body.length; cut++) assert.deepEqual(readSplit(body, [cut]), JSON.parse(text), `${text} cut at ${cut}`);
    }
    const byteAtATime = new JsonValidator(GENEROUS);
    for (const byte of Buffer.from('{"k":1,"\\u006b":2}')) {
      try {
        byteAtATime.push(Buffer.of(byte));
      } catch (error) {
        assert.match((error as Error).message, /member name "k" twice/);
        return;
      }
    }
    assert.fail('the duplicate fed a byte at a time was not refused');
  });

  test('json validator: a member name past nameBytesMax is INVALID_ARGUMENT at the byte that passes it, in any split, escapes included', () => {
    const limits: JsonLimits = { ...GENEROUS, nameBytesMax: 4 };
    // [body, the byte that takes the name past 4 decoded bytes]
    const refused: [string, number][] = [
      ['{"abcde":1}', 6],
      ['{"a":{"bcdefgh":1}}', 11],
      ['{"\\u0061\\u0062\\u0063\\u0064\\u0065":1}', 2 + 5 * 6 - 1],
      ['{"abc\\u00e9":1}', 2 + 3 + 6 - 1],
      ['{"abcd\\n":1}', 2 + 4 + 2 - 1],
      ['{"a\\ud83d\\ude00":1}', 2 + 1 + 12 - 1],
      ['{"ok":1,"\\u0061\\u0061\\u0061\\u0061\\u0061\\u0061\\u0061\\u0061\\u0061":1}', 9 + 5 * 6 - 1],
    ];
    for (const [text, at] of refused) {
      const body = Buffer.from(text);
      for (let cut = 0; cut <= body.length; cut++) {
        assert.equal(codeOf(() => readSplit(body, [cut], limits)), 'INVALID_ARGUMENT', `${text} cut at ${cut}`);
        assert.match(messageOf(() => readSplit(body, [cut], limits)), new RegExp(`member name in the body is longer than 4 bytes.*refused at byte ${at}\\)`), `${text} cut at ${cut}`);
      }
    }
    // At the limit, escaped or not, and a string value of any length: read as JSON.parse reads them.
    for (const text of ['{"abcd":1}', '{"\\u0061\\u0062\\u0063\\u0064":"a string value longer than the names"}', '{"\\ud83d\\ude00":1}', '{"\\u00e9\\u00e9":{"\\n\\t\\/\\"":[]}}']) {
      const body = Buffer.from(text);
      for (let cut = 0; cut <= body.length; cut++) assert.deepEqual(readSplit(body, [cut], limits), JSON.parse(text), `${text} cut at ${cut}`);
      const byteAtATime = new JsonValidator(limits);
      for (const byte of body) byteAtATime.push(Buffer.of(byte));
      byteAtATime.end();
    }
    // The limit of the bodies Mercury reads: a transaction's longest field name fits with room to spare.
    assert.equal(codeOf(() => parseBoundedJson(Buffer.from(`{"${'a'.repeat(JSON_NAME_BYTES_MAX)}":1}`), txnJsonLimits(1024))), undefined);
    assert.equal(codeOf(() => parseBoundedJson(Buffer.from(`{"${'a'.repeat(JSON_NAME_BYTES_MAX + 1)}":1}`), txnJsonLimits(1024))), 'INVALID_ARGUMENT');
  });

  test('json validator: memory held per body byte is a small constant, whatever holds the bytes (names, escapes, strings, numbers)', () => {
    // Audit 2026-12-06: each byte of an escape in a member name was kept as a Buffer view of its own (~100 bytes of
    // heap), so a body's name of \u0061 escapes held some 100 times the body. Measured here with limits that let
    // every shape run to its end (the node's own limits refuse a long name at its 65th byte, test/hostile-bodies).
    const bodyBytes = 1024 * 1024;
    const escapes = Buffer.from('\\u0061'.repeat(64 * 1024 / 6));
    const shapes: [string, string, Buffer][] = [
      ['a member name of \\u0061 escapes', '{"', escapes],
      ['a member name of plain bytes, 7 bytes per chunk', '{"', Buffer.alloc(7, 'a')],
      ['a string value of \\u0061 escapes', '["', escapes],
      ['a string value of \\n escapes', '["', Buffer.from('\\n'.repeat(32 * 1024))],
      ['a number', '[1', Buffer.alloc(64 * 1024, '7')],
    ];
    for (const [what, prefix, chunk] of shapes) {
      const validator = new JsonValidator(GENEROUS);
      const before = process.memoryUsage();
      validator.push(Buffer.from(prefix));
      for (let pushed = 0; pushed < bodyBytes; pushed += chunk.length) validator.push(chunk);
      const after = process.memoryUsage();
      // Held: the name's bytes once (in a buffer grown by doubling), no object per piece. Allowed: 4 per body byte.
      const grown = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
      assert.ok(grown < 4 * bodyBytes + 4 * 1024 * 1024, `${what}: ${(grown / 1024 / 1024).toFixed(1)} MiB held for ${bodyBytes / 1024 / 1024} MiB of body`);
    }
  });

  test('json validator: lone surrogates are refused with LONE_SURROGATE, pairs are read', () => {
    for (const text of ['"\\ud800"', '"\\udc00"', '"\\ud800x"', '"\\ud800\\n"', '"\\ud800\\u0041"', '"\\ude00\\ud83d"', '{"\\udbff":1}', '["a\\ud800"]']) {
      assert.equal(codeOf(() => parseBoundedJson(Buffer.from(text), GENEROUS)), 'LONE_SURROGATE', text);
      // Split inside the escape too.
      for (let cut = 1; cut < text.length; cut++) assert.equal(codeOf(() => readSplit(Buffer.from(text), [cut])), 'LONE_SURROGATE', `${text} cut at ${cut}`);
    }
    assert.equal(parseBoundedJson(Buffer.from('"\\ud83d\\ude00"'), GENEROUS), '\u{1f600}');
    // A pair decodes to 4 UTF-8 bytes: the string limit counts them so.
    assert.equal(codeOf(() => parseBoundedJson(Buffer.from('"\\ud83d\\ude00"'), { ...GENEROUS, stringBytesMax: 3 })), 'JSON_STRING_TOO_LONG');
    assert.equal(codeOf(() => parseBoundedJson(Buffer.from('"\\ud83d\\ude00"'), { ...GENEROUS, stringBytesMax: 4 })), undefined);
  });

  test('json validator: bytes that are not UTF-8 are refused with INVALID_UTF8, never replaced', () => {
    const invalid = [
      [0x22, 0xff, 0x22], // never valid
      [0x22, 0xc0, 0xaf, 0x22], // overlong "/"
      [0x22, 0xed, 0xa0, 0x80, 0x22], // a surrogate encoded in UTF-8
      [0x22, 0xe2, 0x82, 0x22], // a truncated sequence
      [0x22, 0xf4, 0x90, 0x80, 0x80, 0x22], // above U+10FFFF
      [0x22, 0x80, 0x22], // a lone continuation byte
    ];
    for (const bytes of invalid) assert.equal(codeOf(() => parseBoundedJson(Buffer.from(bytes), GENEROUS)), 'INVALID_UTF8', Buffer.from(bytes).toString('hex'));
    assert.equal(parseBoundedJson(Buffer.from('"\u00e9\u20ac\u{1f600}"'), GENEROUS), '\u00e9\u20ac\u{1f600}');
    // Outside strings, a byte above 0x7f is not JSON at all (a BOM included).
    assert.equal(codeOf(() => parseBoundedJson(Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), GENEROUS)), 'INVALID_JSON');
  });

  test('json validator: trailing data, empty bodies and mismatched brackets are INVALID_JSON at the byte', () => {
    for (const text of ['', '   ', '[][]', '{}x', '[}', '{]', '{"a"}', '{"a":}', '[1,]', '{,}', 'tru', 'nul', '"abc', '[', '{"a":1,}', 'True']) {
      assert.equal(codeOf(() => parseBoundedJson(Buffer.from(text), GENEROUS)), 'INVALID_JSON', JSON.stringify(text));
    }
  });

  test('json validator: a hostile body is refused after a bounded prefix', () => {
    const limits = txnJsonLimits(1024 * 1024);
    const chunkBytes = 64 * 1024;
    /** Pushes `prefix`, then `chunk` until `totalBytes`; the code it was refused with and the bytes pushed before. */
    const refusedAfter = (prefix: string, chunk: Buffer, totalBytes: number): { code: string; bytesRead: number } => {
      const validator = new JsonValidator(limits);
      validator.push(Buffer.from(prefix));
      let bytesRead = prefix.length;
      try {
        while (bytesRead < totalBytes) {
          validator.push(chunk);
          bytesRead += chunk.length;
        }
        validator.end();
      } catch (error) {
        return { code: (error as MercuryError).code, bytesRead };
      }
      assert.fail('the body was accepted');
    };
    // 66 MB of nested arrays: refused in the first chunk.
    assert.deepEqual(refusedAfter('', Buffer.alloc(chunkBytes, '['), 66_000_000), { code: 'JSON_TOO_DEEP', bytesRead: 0 });
    // 48 MB of "[]" in one array, and of numbers: refused once the element limit is passed, long before 48 MB.
    for (const [item, itemBytes] of [['[],', 3], ['1,', 2]] as const) {
      const { code, bytesRead } = refusedAfter('[', Buffer.from(item.repeat(Math.floor(chunkBytes / itemBytes))), 48_000_000);
      assert.equal(code, 'JSON_TOO_MANY_ELEMENTS');
      assert.ok(bytesRead <= itemBytes * TXN_JSON_ELEMENTS_MAX, `read ${bytesRead} bytes of ${item} before refusing`);
    }
    // 48 MB of "[]" one after another: not one JSON value; refused at its third byte.
    assert.deepEqual(refusedAfter('', Buffer.from('[]'.repeat(chunkBytes / 2)), 48_000_000), { code: 'INVALID_JSON', bytesRead: 0 });
    // One endless string: refused once it passes the longest legal string.
    const endless = new JsonValidator(limits);
    endless.push(Buffer.from('{"success":[{"op":"put","key":"k","value":"'));
    let stringBytes = 0;
    const letters = Buffer.alloc(chunkBytes, 'a');
    assert.equal(
      codeOf(() => {
        for (; stringBytes < 60_000_000; stringBytes += letters.length) endless.push(letters);
      }),
      'JSON_STRING_TOO_LONG',
    );
    assert.ok(stringBytes <= limits.stringBytesMax, `read ${stringBytes} string bytes`);
  });
});

describe('txn json limits', () => {
  const KEY = (i: number, bytes: number): Buffer => {
    const key = Buffer.alloc(bytes, 0xff);
    key.writeUInt32BE(i);
    return key;
  };
  /** The body and structure of a transaction as the formatter writes it, checked against the derived limits. */
  function assertFits(txn: Txn, valueBytesMax: number): void {
    const body = Buffer.from(JSON.stringify(formatTxn(txn)));
    const branchBytes = Math.max(...[txn.success, txn.failure].map((ops) => ops.reduce((sum, op) => sum + opEncodedBytes(op), 0)));
    assert.ok(body.length <= txnBodyBytesFor(branchBytes), `body ${body.length} > ${txnBodyBytesFor(branchBytes)} for ${branchBytes} bytes of ops`);
    assert.equal(codeOf(() => parseBoundedJson(body, txnJsonLimits(valueBytesMax))), undefined);
  }

  test('txn json limits: the largest transactions of each shape fit the body and structure limits', () => {
    const many = (make: (i: number) => TxnOp): TxnOp[] => Array.from({ length: TXN_OPS_MAX }, (_, i) => make(i));
    // Binary keys and values: base64, the formatter's longest form.
    assertFits({ compares: [], success: many((i) => ({ type: 'put', key: KEY(i, 1024), value: Buffer.alloc(100, 1) })), failure: [] }, 4096);
    assertFits({ compares: [], success: many((i) => ({ type: 'deleteRange', start: KEY(i, 1024), end: KEY(i + 1, 1024) })), failure: [] }, 4096);
    assertFits({ compares: [], success: many((i) => ({ type: 'put', key: Buffer.from([i & 0x7f || 1]), value: Buffer.alloc(0) })), failure: [] }, 4096);
    assertFits({ compares: [], success: [{ type: 'put', key: KEY(1, 1024), value: Buffer.alloc(1024 * 1024, 0x01) }], failure: [] }, 1024 * 1024);
    // The element limit holds every compare and both branches full.
    const full: Txn = {
      compares: Array.from({ length: TXN_COMPARES_MAX }, (_, i) => ({ key: KEY(i, 8), target: 'value', operator: '!=', value: KEY(i, 8) })),
      success: many((i) => ({ type: 'put', key: KEY(i, 8), value: KEY(i, 8) })),
      failure: many((i) => ({ type: 'deleteRange', start: KEY(i, 8), end: KEY(i + 1, 8) })),
    };
    const validator = new JsonValidator(txnJsonLimits(4096));
    validator.push(Buffer.from(JSON.stringify(formatTxn(full))));
    validator.end();
    assert.ok(validator.elementCount <= TXN_JSON_ELEMENTS_MAX, `${validator.elementCount} elements`);
  });
});
