/**
 * Request and response plumbing shared by the routes: bounded body reading, JSON responses, and the single place
 * where a MercuryError becomes an HTTP status and a JSON error body:
 *
 * ```json
 * { "error": { "code": "KEY_TOO_LARGE", "message": "key is 2000 bytes; keys are at most 1024 bytes", "limit": 1024 } }
 * ```
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MIN_SEQ_WAIT_MS_DEFAULT, MIN_SEQ_WAIT_MS_MAX } from '../api/index.js';
import { MercuryError, isMercuryError, type ErrorCode } from '../errors/index.js';
import type { NodeApi } from './node-api.js';

/** The seq a read reflects, or the seq of the entry that carries a write. */
export const SEQ_HEADER = 'x-mercury-seq';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | number> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function errorBody(code: ErrorCode, message: string, details?: Readonly<Record<string, unknown>>): unknown {
  return { error: { code, message, ...details } };
}

/** Answers with the error's status and JSON body. Errors that are not MercuryErrors are bugs: reported as INTERNAL. */
export function sendError(res: ServerResponse, error: unknown, onInternal: (error: unknown) => void): number {
  const mercury = isMercuryError(error) ? error : new MercuryError('INTERNAL', 'internal error; see the node log', { cause: error });
  if (!isMercuryError(error)) onInternal(error);
  if (res.headersSent) {
    res.destroy();
    return mercury.status;
  }
  const headers: Record<string, string> = {};
  if (mercury.code === 'METHOD_NOT_ALLOWED' && typeof mercury.details?.allow === 'string') headers.allow = mercury.details.allow;
  if (mercury.code === 'OVERLOADED') headers['retry-after'] = '1';
  // The request body may not have been read (too large, malformed): the connection cannot be reused safely.
  if (!res.req.complete) headers.connection = 'close';
  sendJson(res, mercury.status, errorBody(mercury.code, mercury.message, mercury.details), headers);
  return mercury.status;
}

/**
 * Reads the whole body, refusing it with `code` as soon as it exceeds `bytesMax` (by Content-Length up front, or while
 * streaming). Slow bodies are cut off by the server's requestTimeout.
 */
export async function readBody(req: IncomingMessage, bytesMax: number, tooLarge: (bytes: number) => MercuryError): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > bytesMax) throw tooLarge(Number(declared));
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > bytesMax) throw tooLarge(total);
      chunks.push(chunk);
    }
  } catch (error) {
    if (isMercuryError(error)) throw error;
    // The client went away or the request timeout cut the body off: the client's doing, not a bug in the node.
    throw new MercuryError('BAD_REQUEST', `the request body ended after ${total} bytes: the connection was closed or timed out`, { cause: error });
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
}

export function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new MercuryError('INVALID_JSON', `request body is not valid JSON: ${(error as Error).message}`);
  }
}

/** Parses an optional non-negative integer query parameter. */
export function queryInteger(query: URLSearchParams, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER, min = 0): number {
  const raw = query.get(name);
  if (raw === null) return fallback;
  // Not the fallback: `?ifModSeq=` meaning 0 would turn a forgotten number into "only if absent".
  if (raw === '') throw new MercuryError('INVALID_ARGUMENT', `query parameter ${name} is empty; give a non-negative integer, or leave the parameter out`);
  if (!/^\d+$/.test(raw)) throw new MercuryError('INVALID_ARGUMENT', `query parameter ${name} must be a non-negative integer, got "${raw}"`);
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min || value > max)
    throw new MercuryError('INVALID_ARGUMENT', `query parameter ${name} must be between ${min} and ${max}, got ${raw}`);
  return value;
}

/** A read's `?minSeq=N[&timeoutMs=T]`: waits (bounded) until the node has applied seq N. */
export async function readSeqOptions(node: NodeApi, query: URLSearchParams): Promise<void> {
  const minSeq = queryInteger(query, 'minSeq', 0);
  if (minSeq > node.store.head().seq) {
    await node.waitForSeq(minSeq, queryInteger(query, 'timeoutMs', MIN_SEQ_WAIT_MS_DEFAULT, MIN_SEQ_WAIT_MS_MAX));
  }
}
