/**
 * Fuzzing the HTTP request handling of a live node: random methods, paths, query strings, headers and bodies (random
 * bytes, random JSON, transaction-shaped JSON), then raw bytes on a socket (mutated and pipelined requests).
 *
 * Every answer must be a well-formed HTTP response that is either a success or a JSON error whose code is one the API
 * defines and whose status is the one ERROR_STATUS assigns to it; no request may cause an internal error; and the node
 * must keep serving with a valid chain afterwards. A failure prints the shrunk request and the MERCURY_TEST_SEED that
 * reproduces it (test/support/seed.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { assertProperty } from './support/seed.js';
import { validateConfig } from '../src/config/index.js';
import { ERROR_STATUS, type ErrorCode } from '../src/errors/index.js';
import { MercuryNode } from '../src/node/index.js';
import { auditLog, KNOWN_CODES, parseRawResponses, rawExchange, request, recordingLogger, type HttpResponse } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';

const VALUE_BYTES_MAX = 4096;
const REQUEST_TIMEOUT_MS = 5000;

// --- Generators ---------------------------------------------------------------------------------------------------

const percentEncoded = fc.uint8Array({ minLength: 1, maxLength: 4 }).map((bytes) => Array.from(bytes, (b) => `%${b.toString(16).padStart(2, '0')}`).join(''));
const pathSegment = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9._~-]{0,8}$/),
  fc.constantFrom('', '.', '..', '%', '%zz', '%f', '%00', '%ff', '%2F', '%2f', '%E2%82%AC', 'fz'),
  percentEncoded,
);
const keyPath = fc.array(pathSegment, { maxLength: 5 }).map((segments) => `/v1/kv/${segments.join('/')}`);
// Around the key limit (1024), and beyond LMDB's own (1978), where a key that reaches LMDB makes it throw.
const longKeyPath = fc.oneof(fc.integer({ min: 1020, max: 1030 }), fc.integer({ min: 1970, max: 5000 })).map((length) => `/v1/kv/${'k'.repeat(length)}`);
const knownPath = fc.constantFrom('/v1/kv', '/v1/kv/', '/v1/txn', '/v1/log', '/v1/status', '/healthz', '/metrics', '/', '/v1', '/v1/kv/fz/a', '/v1/kv/fz/b');
// node:http refuses to send a path with characters outside \x21-\xff, so random paths stay within printable ASCII.
const randomPath = fc.stringMatching(/^[\x21-\x7e]{0,40}$/).map((text) => `/${text}`);
const path = fc.oneof({ weight: 3, arbitrary: keyPath }, { weight: 3, arbitrary: knownPath }, { weight: 1, arbitrary: longKeyPath }, { weight: 1, arbitrary: randomPath });

// Mostly the names routes take: any other is refused (INVALID_ARGUMENT), and requests must still succeed often.
const queryName = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom('prefix', 'limit', 'cursor', 'from', 'ifModSeq', 'minSeq', 'timeoutMs') },
  { weight: 1, arbitrary: fc.stringMatching(/^[a-zA-Z]{1,8}$/) },
);
const queryValue = fc.oneof(
  fc.nat(30).map(String),
  fc.integer().map(String),
  fc.constantFrom('', '-1', '0', '1e3', '1.5', '99999999999999999999', 'fz/', 'fz', '%ff', '%zz', 'AAAA', '!!', 'p'.repeat(1025), 'p'.repeat(3000)),
  fc.stringMatching(/^[A-Za-z0-9%_.~/-]{0,12}$/),
);
/**
 * A query string. A minSeq beyond the head makes a read wait (5 s by default): whenever minSeq appears, a short
 * timeoutMs comes first (URLSearchParams.get takes the first), so the fuzzer explores the wait without stalling on it.
 */
const queryWithParameters = fc
  .tuple(fc.array(fc.tuple(queryName, queryValue), { maxLength: 4 }), fc.nat(20))
  .map(([pairs, timeoutMs]) => {
    const parts = pairs.map(([name, value]) => `${name}=${value}`);
    if (pairs.some(([name]) => name === 'minSeq')) parts.unshift(`timeoutMs=${timeoutMs}`);
    return parts.length === 0 ? '' : `?${parts.join('&')}`;
  });
/**
 * Many requests carry no query, or a lone `ifModSeq` (conditional writes: 412s): a random query is often refused for a
 * parameter its route does not take.
 */
const query = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  { weight: 1, arbitrary: fc.nat(5).map((modSeq) => `?ifModSeq=${modSeq}`) },
  { weight: 3, arbitrary: queryWithParameters },
);

const method = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('GET', 'PUT', 'DELETE', 'POST') },
  { weight: 1, arbitrary: fc.constantFrom('HEAD', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND') },
);

const base64Text = fc.uint8Array({ maxLength: 12 }).map((bytes) => Buffer.from(bytes).toString('base64'));
const keyText = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 6 }).map((text) => `fz/${text}`) },
  { weight: 1, arbitrary: fc.constantFrom('', 'fz', 'k'.repeat(1025), '\u{1F600}') },
  { weight: 1, arbitrary: fc.string({ maxLength: 10 }) },
);
const strange = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.nat(3), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.nat(), { maxKeys: 2 }));
const textField = fc.oneof({ weight: 5, arbitrary: keyText }, { weight: 1, arbitrary: strange });
const valueField = fc.oneof({ weight: 5, arbitrary: fc.string({ maxLength: 16 }) }, { weight: 1, arbitrary: fc.constant('v'.repeat(VALUE_BYTES_MAX + 1)) }, { weight: 1, arbitrary: strange });
const base64Field = fc.oneof({ weight: 5, arbitrary: base64Text }, { weight: 1, arbitrary: fc.constantFrom('!!', 'YQ', '====', 'YQ==YQ==') }, { weight: 1, arbitrary: strange });
const smallNumber = fc.oneof(fc.nat(40), fc.integer(), fc.double(), fc.constantFrom('1', null, Number.MAX_SAFE_INTEGER + 2));

const opJson = fc.record(
  {
    op: fc.oneof({ weight: 8, arbitrary: fc.constantFrom('put', 'delete', 'deletePrefix', 'deleteRange') }, { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 6 }), strange) }),
    key: textField,
    keyBase64: base64Field,
    value: valueField,
    valueBase64: base64Field,
    prefix: textField,
    start: textField,
    end: textField,
  },
  { requiredKeys: [] },
);
const compareJson = fc.record(
  {
    key: textField,
    keyBase64: base64Field,
    exists: fc.oneof(fc.boolean(), strange),
    value: valueField,
    valueBase64: base64Field,
    modSeq: smallNumber,
    version: smallNumber,
    createSeq: smallNumber,
    op: fc.oneof(fc.constantFrom('=', '!=', '<', '>'), fc.string({ maxLength: 3 }), strange),
  },
  { requiredKeys: [] },
);
const branch = fc.oneof({ weight: 8, arbitrary: fc.array(opJson, { maxLength: 5 }) }, { weight: 1, arbitrary: strange });
const txnJson = fc.oneof(
  { weight: 6, arbitrary: fc.record({ compare: fc.oneof({ weight: 8, arbitrary: fc.array(compareJson, { maxLength: 3 }) }, { weight: 1, arbitrary: strange }), success: branch, failure: branch }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: fc.record({ success: branch, junk: fc.jsonValue() }) },
  { weight: 1, arbitrary: fc.jsonValue() },
);

/**
 * Transactions valid by construction: keys under fz/ (some of them the seeded ones, so compares can hold), each
 * compare with exactly one target, each op with its required fields. The node must commit every one of them (200,
 * whether or not the compares held); the random generator above explores the refusals.
 */
const seededKey = fc.integer({ min: 0, max: 19 }).map((i) => `fz/${String.fromCharCode(97 + i)}`);
const validKey = fc.oneof(seededKey, fc.string({ maxLength: 6 }).map((text) => `fz/${text}`));
const validOperator = fc.constantFrom('=', '!=', '<', '>');
const validCompare = fc.oneof(
  fc.record({ key: validKey, exists: fc.boolean() }),
  fc.record({ key: validKey, value: fc.string({ maxLength: 16 }), op: validOperator }),
  fc.record({ key: validKey, valueBase64: base64Text, op: validOperator }, { requiredKeys: ['key', 'valueBase64'] }),
  fc.tuple(validKey, fc.constantFrom('modSeq', 'version', 'createSeq'), fc.nat(40), validOperator).map(([key, target, number, op]) => ({ key, [target]: number, op })),
);
const validOp = fc.oneof(
  fc.record({ op: fc.constant('put'), key: validKey, value: fc.string({ maxLength: 16 }) }),
  fc.record({ op: fc.constant('put'), keyBase64: fc.constant(Buffer.from('fz/b64').toString('base64')), valueBase64: base64Text }),
  fc.record({ op: fc.constant('delete'), key: validKey }),
  fc.record({ op: fc.constant('deletePrefix'), prefix: validKey }),
  fc.record({ op: fc.constant('deleteRange'), start: validKey }),
  // A bounded range is well-formed when its end sorts after its start (an empty range is refused).
  fc
    .tuple(validKey, validKey)
    .filter(([a, b]) => a !== b)
    .map(([a, b]) => (Buffer.compare(Buffer.from(a), Buffer.from(b)) < 0 ? { op: 'deleteRange', start: a, end: b } : { op: 'deleteRange', start: b, end: a })),
);
const validTxnJson = fc.record(
  { compare: fc.array(validCompare, { maxLength: 3 }), success: fc.array(validOp, { maxLength: 5 }), failure: fc.array(validOp, { maxLength: 5 }) },
  { requiredKeys: [] },
);

const body = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)) },
  { weight: 1, arbitrary: fc.json() },
  { weight: 4, arbitrary: txnJson.map((value) => JSON.stringify(value)) },
  { weight: 1, arbitrary: fc.integer({ min: VALUE_BYTES_MAX - 2, max: VALUE_BYTES_MAX + 2 }).map((length) => Buffer.alloc(length, 0x61)) },
);

const printable = fc.stringMatching(/^[\x20-\x7e]{0,40}$/);
const headers = fc.record(
  {
    'content-type': fc.oneof(fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/octet-stream', ''), printable),
    accept: printable,
    'x-fuzz': printable,
  },
  { requiredKeys: [] },
);

interface FuzzRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer | string | undefined;
}

/**
 * Random requests, and some aimed at the transaction route alone (no query, random headers and bodies): since queries
 * are read strictly, few random requests got past the query to its media-type and body checks.
 */
const fuzzRequest: fc.Arbitrary<FuzzRequest> = fc.oneof(
  { weight: 9, arbitrary: fc.record({ method, path: fc.tuple(path, query).map(([p, q]) => p + q), headers, body }) },
  { weight: 1, arbitrary: fc.record({ method: fc.constant('POST'), path: fc.constant('/v1/txn'), headers, body }) },
);

// --- Checks -------------------------------------------------------------------------------------------------------

const ERROR_STATUSES = new Set(Object.values(ERROR_STATUS));

/** The answer to any request: a success, or a JSON error with a defined code, its table status, and never INTERNAL. */
function checkResponse(what: string, status: number, contentType: string | undefined, bodyText: string, isHead: boolean): void {
  if (status >= 200 && status < 300) {
    if (!isHead && contentType?.startsWith('application/json') === true) assert.doesNotThrow(() => JSON.parse(bodyText), `${what}: 2xx body is not JSON`);
    return;
  }
  if (isHead) {
    // A HEAD answer has no body to carry the code; its status must still be one the error table uses.
    assert.ok(ERROR_STATUSES.has(status), `${what}: HEAD answered ${status}`);
    return;
  }
  assert.match(String(contentType), /^application\/json/, `${what}: error ${status} is not JSON: ${bodyText.slice(0, 200)}`);
  const parsed = JSON.parse(bodyText) as { error?: { code?: string; message?: string } };
  const code = parsed.error?.code;
  assert.ok(code !== undefined && KNOWN_CODES.has(code), `${what}: unknown error code in ${bodyText.slice(0, 200)}`);
  assert.notEqual(code, 'INTERNAL', `${what}: the request caused an internal error: ${bodyText}`);
  assert.equal(status, ERROR_STATUS[code as ErrorCode], `${what}: ${code} answered with ${status}`);
  assert.equal(typeof parsed.error?.message, 'string');
  assert.ok(parsed.error!.message!.length > 0);
}


describe('http fuzz', () => {
  let dir: string;
  let node: MercuryNode;
  const errorLog: string[] = [];

  before(async () => {
    dir = makeTempDir('http-fuzz');
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0, valueBytesMax: VALUE_BYTES_MAX }), { auth: 'off', logger: recordingLogger(errorLog) });
    // Some keys to find, compare against and page through.
    for (let i = 0; i < 20; i++) await request(node.url, 'PUT', `/v1/kv/fz/${String.fromCharCode(97 + i)}`, { body: `value ${i}` });
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  test('fuzz: random requests get a success or a defined JSON error with its table status', async (t) => {
    const statuses = new Map<number, number>();
    await assertProperty(
      fc.asyncProperty(fuzzRequest, async (fuzz) => {
        const what = `${fuzz.method} ${fuzz.path}`;
        let response: HttpResponse;
        try {
          response = await request(node.url, fuzz.method, fuzz.path, { headers: fuzz.headers, body: fuzz.body, timeoutMs: REQUEST_TIMEOUT_MS });
        } catch (error) {
          assert.fail(`${what}: no valid HTTP response: ${(error as Error).message}`);
        }
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        checkResponse(what, response.status, response.headers['content-type'], response.body.toString('utf8'), fuzz.method === 'HEAD');
      }),
      { numRuns: 1500, includeErrorInReport: true },
    );
    t.diagnostic(`statuses: ${JSON.stringify([...statuses].sort(([a], [b]) => a - b))}`);
    // The generators must reach both sides: successes and a spread of errors (not, say, 404 for everything).
    assert.ok((statuses.get(200) ?? 0) > 100, `too few successes: ${JSON.stringify([...statuses])}`);
    assert.ok([...statuses.keys()].filter((status) => status >= 400).length >= 6, `too few kinds of errors: ${JSON.stringify([...statuses])}`);
  });

  test('fuzz: random transactions are committed or refused with a defined error; well-formed ones are all committed', async () => {
    let wellFormed = 0;
    const txn = fc.oneof(
      { weight: 2, arbitrary: txnJson.map((value) => ({ value, valid: false })) },
      { weight: 1, arbitrary: validTxnJson.map((value) => ({ value, valid: true })) },
    );
    await assertProperty(
      fc.asyncProperty(txn, async ({ value, valid }) => {
        const text = JSON.stringify(value);
        const what = `POST /v1/txn ${text.slice(0, 300)}`;
        const response = await request(node.url, 'POST', '/v1/txn', { headers: { 'content-type': 'application/json' }, body: text, timeoutMs: REQUEST_TIMEOUT_MS });
        checkResponse(what, response.status, response.headers['content-type'], response.body.toString('utf8'), false);
        if (valid) {
          assert.equal(response.status, 200, `${what}: a well-formed transaction was refused: ${response.body.toString('utf8')}`);
          wellFormed++;
        }
      }),
      { numRuns: 800, includeErrorInReport: true },
    );
    // A third of 800 runs: fewer than 100 would mean the mix above no longer reaches the success path.
    assert.ok(wellFormed >= 100, `only ${wellFormed} well-formed transactions were generated`);
  });

  const templates = [
    'GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n',
    'GET /v1/kv/fz/a HTTP/1.1\r\nhost: localhost\r\n\r\n',
    'PUT /v1/kv/fz/raw HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\n\r\nhello',
    'POST /v1/txn HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n9\r\n{"succes\r\n15\r\ns":[{"op":"delete",\r\n10\r\n"key":"fz/raw"}]}\r\n0\r\n\r\n',
    'DELETE /v1/kv?prefix=fz/raw HTTP/1.1\r\nhost: localhost\r\n\r\n',
    'GET /v1/kv?prefix=fz/&limit=3 HTTP/1.1\r\nhost: localhost\r\n\r\n',
  ].map((text) => Buffer.from(text, 'latin1'));

  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 6 }) }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 6 }) }),
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.nat(255) }),
  );
  const mutated = fc.tuple(fc.constantFrom(...templates), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([template, mutations]) => {
    let bytes = Buffer.from(template);
    for (const change of mutations) {
      const at = change.at % (bytes.length + 1);
      if (change.kind === 'insert') bytes = Buffer.concat([bytes.subarray(0, at), change.bytes, bytes.subarray(at)]);
      else if (change.kind === 'delete') bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + change.length)]);
      else if (at < bytes.length) bytes[at] = change.byte;
    }
    return bytes;
  });
  const rawInput = fc.oneof(
    { weight: 4, arbitrary: mutated },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 200 }).map((bytes) => Buffer.from(bytes)) },
    { weight: 2, arbitrary: fc.array(fc.oneof(fc.constantFrom(...templates), mutated), { minLength: 2, maxLength: 4 }).map((parts) => Buffer.concat(parts)) },
  );

  test('fuzz: raw bytes on a socket get well-formed responses or a closed connection, never a hang', async () => {
    await assertProperty(
      fc.asyncProperty(rawInput, fc.nat(3), async (input, split) => {
        // Send in one or two pieces, then half-close: the node must answer what it got and close, or just close.
        const at = split === 0 ? input.length : Math.floor(input.length / (split + 1));
        const pieces = at > 0 && at < input.length ? [input.subarray(0, at), input.subarray(at)] : [input];
        const text = await rawExchange(node.url, pieces, { end: true, timeoutMs: REQUEST_TIMEOUT_MS });
        const what = JSON.stringify(input.toString('latin1')).slice(0, 300);
        let responses;
        try {
          responses = parseRawResponses(text);
        } catch (error) {
          assert.fail(`${what}: answered with bytes that are not HTTP responses (${(error as Error).message}): ${JSON.stringify(text.slice(0, 300))}`);
        }
        for (const response of responses) checkResponse(what, response.status, response.headers['content-type'], response.body, false);
      }),
      { numRuns: 600, includeErrorInReport: true },
    );
  });

  test('fuzz: the node keeps serving with a valid chain and logged no internal error', async () => {
    const health = await request(node.url, 'GET', '/healthz');
    assert.equal(health.status, 200);
    assert.equal((JSON.parse(health.body.toString()) as { ok: boolean }).ok, true);
    const entries = await auditLog(node.url);
    assert.ok(entries.length > 20, 'fuzzing committed entries');
    assert.deepEqual(errorLog, []);
  });
});
