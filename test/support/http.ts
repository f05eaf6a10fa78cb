/**
 * HTTP helpers for integration tests: a request function that exposes everything (status, every header, the body as
 * bytes), a raw-socket exchange for requests no well-behaved client would send, and the audit walk that checks a
 * node's whole log: gap-free seqs, each prevHash equal to the previous hash, each hash recomputed from the entry body,
 * and the head hash in /v1/status equal to the last entry's hash.
 */
import type { Logger } from '../../src/logging/index.js';
import assert from 'node:assert/strict';
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { ERROR_STATUS, ErrorCode } from '../../src/errors/index.js';
import { GENESIS_HASH, sealEntry, type Op } from '../../src/log/index.js';

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface RequestOptions {
  readonly body?: Buffer | string;
  readonly headers?: Record<string, string | number>;
  readonly agent?: Agent;
  /** Fail (instead of hanging the test) when the whole exchange takes longer than this. */
  readonly timeoutMs?: number;
  /** Connect from this address (127.0.0.3: another remote host than the test's other clients). */
  readonly localAddress?: string;
}

/** One request on a fresh connection (no keep-alive), so a test never depends on a socket left by another. */
export function request(baseUrl: string, method: string, path: string, options: RequestOptions = {}): Promise<HttpResponse> {
  const url = new URL(baseUrl);
  const headers: Record<string, string | number> = { ...options.headers };
  const framed = Object.keys(headers).some((name) => /^(content-length|transfer-encoding)$/i.test(name));
  // node:http sends a GET or DELETE body without any framing, which the server then reads as a second, garbage request.
  if (options.body !== undefined && !framed) headers['content-length'] = Buffer.byteLength(options.body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, method, path, headers, agent: options.agent ?? false, localAddress: options.localAddress },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(options.timeoutMs ?? 30_000, () => req.destroy(new Error(`${method} ${path}: no response within ${options.timeoutMs ?? 30_000} ms`)));
    req.end(options.body);
  });
}

export async function requestJson<T = Record<string, unknown>>(baseUrl: string, method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const response = await request(baseUrl, method, path, options);
  assert.ok(response.status >= 200 && response.status < 300, `${method} ${path}: HTTP ${response.status} ${response.body.toString()}`);
  return JSON.parse(response.body.toString('utf8')) as T;
}

export interface ErrorJson {
  readonly code: string;
  readonly message: string;
  readonly [field: string]: unknown;
}

/**
 * Asserts that a response is a Mercury JSON error with `code` (and, when given, `status`; by default the status the
 * error table assigns to the code) and returns the error object.
 */
export function assertError(response: HttpResponse, code: ErrorCode, status: number = ERROR_STATUS[code]): ErrorJson {
  const text = response.body.toString('utf8');
  assert.equal(response.status, status, `expected HTTP ${status} ${code}, got ${response.status}: ${text}`);
  assert.match(String(response.headers['content-type']), /^application\/json/);
  const body = JSON.parse(text) as { error?: ErrorJson };
  assert.ok(body.error !== undefined, `no error object in ${text}`);
  assert.equal(body.error.code, code, text);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  return body.error;
}

/** A parsed raw HTTP/1.1 response. */
export interface RawResponse {
  readonly statusLine: string;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Parses exactly one HTTP/1.1 response with a content-length body; throws if the text is not one. */
export function parseRawResponse(text: string): RawResponse {
  const [response, rest] = parseRawResponsePrefix(text);
  assert.equal(rest, '', 'bytes after the response');
  return response;
}

/** Splits a stream of HTTP/1.1 responses (each with a content-length) into responses. */
export function parseRawResponses(text: string): RawResponse[] {
  const responses: RawResponse[] = [];
  let rest = text;
  while (rest.length > 0) {
    const [response, remaining] = parseRawResponsePrefix(rest);
    responses.push(response);
    rest = remaining;
  }
  return responses;
}

function parseRawResponsePrefix(text: string): [RawResponse, string] {
  const headerEnd = text.indexOf('\r\n\r\n');
  assert.ok(headerEnd > 0, `no end of headers in ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine, ...lines] = text.slice(0, headerEnd).split('\r\n');
  const match = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine!);
  assert.ok(match !== null, `not an HTTP/1.1 status line: ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    assert.ok(colon > 0, `malformed header line ${JSON.stringify(line)}`);
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers['content-length']);
  assert.ok(Number.isSafeInteger(length), `no content-length in ${JSON.stringify(text.slice(0, headerEnd))}`);
  // The text is latin1 (one char per byte), so lengths in chars are lengths in bytes.
  const body = text.slice(headerEnd + 4, headerEnd + 4 + length);
  assert.equal(body.length, length, 'body shorter than its content-length');
  return [{ statusLine: statusLine!, status: Number(match[1]), headers, body: Buffer.from(body, 'latin1').toString('utf8') }, text.slice(headerEnd + 4 + length)];
}

/**
 * Writes `data` on a new TCP connection (in pieces with a pause between them, when given several) and resolves with
 * everything the server sent until it closed the connection.
 */
export function rawExchange(
  baseUrl: string,
  data: Buffer | string | readonly (Buffer | string)[],
  options: { pauseMs?: number; timeoutMs?: number; end?: boolean } = {},
): Promise<string> {
  const url = new URL(baseUrl);
  const pieces = Array.isArray(data) ? (data as readonly (Buffer | string)[]) : [data as Buffer | string];
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`server did not close the connection within ${options.timeoutMs ?? 5000} ms; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1').slice(0, 300))}`));
    }, options.timeoutMs ?? 5000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    // The server may close while we still write (that is what a cut-off looks like): only the answer matters.
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    const writeFrom = (index: number): void => {
      if (index >= pieces.length || socket.destroyed) return;
      socket.write(pieces[index]!);
      if (index + 1 < pieces.length) setTimeout(() => writeFrom(index + 1), options.pauseMs ?? 0);
      // Half-close: the server sees the end of the request stream and must answer or close, not wait for more.
      else if (options.end === true) socket.end();
    };
    socket.once('connect', () => writeFrom(0));
  });
}

/** Every known error code, for checking that a response's code is one the API defines. */
export const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));

// --- Log audit ---------------------------------------------------------------------------------------------------------

export interface LogEntryJson {
  readonly seq: number;
  readonly timeMs: number;
  readonly prevHash: string;
  readonly hash: string;
  readonly ops: readonly Record<string, string>[];
  /** Who wrote the ops, as runs in op order (absent when none was recorded). */
  readonly authors?: readonly { readonly author: string | null; readonly ops: number }[];
  /** The root's signature of `hash`, in hex (null when unsigned). */
  readonly signature?: string | null;
}

export interface LogPage {
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly entries: readonly LogEntryJson[];
}

function jsonBytes(op: Record<string, string>, name: string): Buffer {
  const text = op[name];
  assert.equal(typeof text, 'string', `op field ${name} missing in ${JSON.stringify(op)}`);
  const encoding = op[`${name}Encoding`];
  assert.ok(encoding === 'utf8' || encoding === 'base64', `op field ${name}Encoding is ${encoding}`);
  return Buffer.from(text!, encoding);
}

/** The ops of a log entry as the JSON API shows them, back as Ops (so the entry hash can be recomputed). */
export function opsFromJson(ops: readonly Record<string, string>[]): Op[] {
  return ops.map((op) => {
    switch (op.op) {
      case 'put':
        return { type: 'put', key: jsonBytes(op, 'key'), value: jsonBytes(op, 'value') };
      case 'delete':
        return { type: 'delete', key: jsonBytes(op, 'key') };
      case 'deleteRange':
        return { type: 'deleteRange', start: jsonBytes(op, 'start'), end: jsonBytes(op, 'end') };
      default:
        assert.fail(`unknown op in log: ${JSON.stringify(op)}`);
    }
  });
}

/**
 * Walks the whole retained log page by page and checks the chain: seqs are gap-free, every prevHash is the previous
 * entry's hash (genesis for seq 1), every hash is SHA-256 over the re-encoded body, and the head hash in /v1/status is
 * the last entry's hash. Returns every entry, in order.
 */
export async function auditLog(baseUrl: string, pageLimit = 1000, options: RequestOptions = {}): Promise<LogEntryJson[]> {
  const status = await requestJson<{ seq: number; headHash: string }>(baseUrl, 'GET', '/v1/status', options);
  const entries: LogEntryJson[] = [];
  let from: number | undefined;
  let previous: LogEntryJson | undefined;
  let firstSeq = 1;
  while (true) {
    const page = await requestJson<LogPage>(baseUrl, 'GET', `/v1/log?limit=${pageLimit}${from === undefined ? '' : `&from=${from}`}`, options);
    if (from === undefined) firstSeq = page.firstSeq;
    if (previous === undefined && page.firstSeq === 1 && page.entries.length > 0) assert.equal(page.entries[0]!.prevHash, GENESIS_HASH.toString('hex'), 'seq 1 must link to genesis');
    for (const entry of page.entries) {
      if (previous !== undefined) {
        assert.equal(entry.seq, previous.seq + 1, `seq gap after ${previous.seq}`);
        assert.equal(entry.prevHash, previous.hash, `prevHash of seq ${entry.seq} is not the hash of seq ${previous.seq}`);
      } else {
        assert.equal(entry.seq, page.firstSeq, 'the walk starts at the first retained seq');
      }
      // The hash covers who wrote the ops (a node with auth records them): null in JSON is '' in the record.
      const authors = (entry.authors ?? []).map((run) => ({ author: run.author ?? '', opCount: run.ops }));
      const resealed = sealEntry({ seq: entry.seq, timeMs: entry.timeMs, ops: opsFromJson(entry.ops), authors }, Buffer.from(entry.prevHash, 'hex'));
      assert.equal(resealed.entry.hash.toString('hex'), entry.hash, `hash of seq ${entry.seq} does not match its body`);
      entries.push(entry);
      previous = entry;
    }
    if (page.entries.length === 0 || previous === undefined || previous.seq >= page.lastSeq) break;
    from = previous.seq + 1;
  }
  // A replica that just installed a snapshot holds no log yet: its chain starts after the snapshot's seq.
  if (entries.length === 0 && firstSeq > status.seq) return entries;
  // Writes may have landed between the status read and the walk; the walk must reach at least the status seq.
  assert.ok((previous?.seq ?? 0) >= status.seq, `log ends at ${previous?.seq} but status says seq ${status.seq}`);
  const atStatus = entries.find((entry) => entry.seq === status.seq);
  if (status.seq > 0) assert.equal(atStatus?.hash, status.headHash, `status headHash differs from the hash of seq ${status.seq}`);
  else assert.equal(status.headHash, GENESIS_HASH.toString('hex'));
  return entries;
}

/** A logger that keeps what the node reports as internal errors: a client must never be able to cause one. */
export function recordingLogger(lines: string[]): Logger {
  const logger: Logger = {
    log(level, message, fields) {
      if (level === 'error') lines.push(`${message} ${JSON.stringify(fields)}`);
    },
    child: () => logger,
  };
  return logger;
}

/** The value of the first `/metrics` line that `line` matches, or 0 when there is none. */
export async function metricValue(baseUrl: string, line: RegExp): Promise<number> {
  const text = (await request(baseUrl, 'GET', '/metrics')).body.toString();
  const found = text.split('\n').find((candidate) => line.test(candidate));
  return found === undefined ? 0 : Number(found.slice(found.lastIndexOf(' ') + 1));
}

/** Polls `check` until it holds; fails naming `what` after `timeoutMs`. */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
