/**
 * A small HTTP client for one node, used by the CLI and tests. Errors from the server arrive as `MercuryError` with the
 * server's stable code; a node that cannot be reached is `UNAVAILABLE`.
 */
import { ErrorCode, MercuryError } from '../errors/index.js';

export interface KeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

export interface RangePageResult {
  readonly seq: number;
  readonly items: KeyValue[];
  readonly more: boolean;
  readonly cursor: string | null;
}

export interface TxnJson {
  readonly compare?: readonly Record<string, unknown>[];
  readonly success?: readonly Record<string, unknown>[];
  readonly failure?: readonly Record<string, unknown>[];
}

export class UnavailableError extends Error {
  readonly code = 'UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UnavailableError';
  }
}

/** Percent-encodes every byte of a key that is not unreserved, so any bytes survive the URL path. */
export function encodeKeyPath(key: Buffer): string {
  let path = '';
  for (const byte of key) {
    const char = String.fromCharCode(byte);
    path += /[A-Za-z0-9\-._~/]/.test(char) && byte < 0x80 ? char : `%${byte.toString(16).padStart(2, '0').toUpperCase()}`;
  }
  return path;
}

function toBytes(value: string | Buffer): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
}

export class NodeClient {
  constructor(
    readonly baseUrl: string,
    private readonly timeoutMs = 30_000,
  ) {}

  private async request(method: string, path: string, body?: Buffer | string, contentType?: string): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        body,
        headers: contentType === undefined ? undefined : { 'content-type': contentType },
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw new UnavailableError(`cannot reach ${this.baseUrl}: ${(error as Error).cause ? String((error as Error & { cause: unknown }).cause) : (error as Error).message}`, { cause: error });
    }
    if (response.ok) return response;
    const text = await response.text();
    let parsed: { error?: { code?: string; message?: string } } = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      // Not a Mercury error body (a proxy in between?): report the status line.
    }
    const code = parsed.error?.code;
    const known = code !== undefined && Object.values(ErrorCode).includes(code as ErrorCode);
    throw new MercuryError(known ? (code as ErrorCode) : 'INTERNAL', parsed.error?.message ?? `HTTP ${response.status} from ${this.baseUrl}${path}`, {
      details: parsed.error as Record<string, unknown> | undefined,
    });
  }

  private async json<T>(method: string, path: string, body?: Buffer | string, contentType?: string): Promise<T> {
    return (await (await this.request(method, path, body, contentType)).json()) as T;
  }

  /** Returns the key, or undefined if it does not exist. */
  async get(key: string | Buffer): Promise<(KeyValue & { seq: number }) | undefined> {
    const bytes = toBytes(key);
    try {
      const response = await this.request('GET', `/v1/kv/${encodeKeyPath(bytes)}`);
      return {
        key: bytes,
        value: Buffer.from(await response.arrayBuffer()),
        seq: Number(response.headers.get('x-mercury-seq')),
        createSeq: Number(response.headers.get('x-mercury-create-seq')),
        modSeq: Number(response.headers.get('x-mercury-mod-seq')),
        version: Number(response.headers.get('x-mercury-version')),
      };
    } catch (error) {
      if (error instanceof MercuryError && error.code === 'KEY_NOT_FOUND') return undefined;
      throw error;
    }
  }

  async put(key: string | Buffer, value: string | Buffer, options: { ifModSeq?: number } = {}): Promise<{ seq: number }> {
    const query = options.ifModSeq === undefined ? '' : `?ifModSeq=${options.ifModSeq}`;
    return this.json('PUT', `/v1/kv/${encodeKeyPath(toBytes(key))}${query}`, toBytes(value), 'application/octet-stream');
  }

  async delete(key: string | Buffer, options: { ifModSeq?: number } = {}): Promise<{ seq: number; deleted: boolean }> {
    const query = options.ifModSeq === undefined ? '' : `?ifModSeq=${options.ifModSeq}`;
    return this.json('DELETE', `/v1/kv/${encodeKeyPath(toBytes(key))}${query}`);
  }

  async deletePrefix(prefix: string): Promise<{ seq: number }> {
    return this.json('DELETE', `/v1/kv?prefix=${encodeURIComponent(prefix)}`);
  }

  async rangePage(prefix: string, options: { limit?: number; cursor?: string | null } = {}): Promise<RangePageResult> {
    const query = new URLSearchParams({ prefix });
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.cursor) query.set('cursor', options.cursor);
    const page = await this.json<{
      seq: number;
      more: boolean;
      cursor: string | null;
      items: { key: string; keyEncoding: BufferEncoding; value: string; valueEncoding: BufferEncoding; createSeq: number; modSeq: number; version: number }[];
    }>('GET', `/v1/kv?${query.toString()}`);
    return {
      seq: page.seq,
      more: page.more,
      cursor: page.cursor,
      items: page.items.map((item) => ({
        key: Buffer.from(item.key, item.keyEncoding),
        value: Buffer.from(item.value, item.valueEncoding),
        createSeq: item.createSeq,
        modSeq: item.modSeq,
        version: item.version,
      })),
    };
  }

  /** Every key under a prefix, page by page. */
  async *range(prefix: string, pageLimit = 1000): AsyncGenerator<KeyValue> {
    let cursor: string | null = null;
    do {
      const page: RangePageResult = await this.rangePage(prefix, { limit: pageLimit, cursor });
      yield* page.items;
      cursor = page.more ? page.cursor : null;
    } while (cursor !== null);
  }

  async txn(txn: TxnJson): Promise<{ succeeded: boolean; seq: number }> {
    return this.json('POST', '/v1/txn', JSON.stringify(txn), 'application/json');
  }

  async log(from?: number, limit?: number): Promise<{ firstSeq: number; lastSeq: number; entries: Record<string, unknown>[] }> {
    const query = new URLSearchParams();
    if (from !== undefined) query.set('from', String(from));
    if (limit !== undefined) query.set('limit', String(limit));
    return this.json('GET', `/v1/log?${query.toString()}`);
  }

  async status(): Promise<Record<string, unknown>> {
    return this.json('GET', '/v1/status');
  }

  /** Asks a replica to discard its chain and take a full snapshot from its upstream (NOT_A_REPLICA on the root). */
  async resync(): Promise<{ resync: string; seq: number }> {
    return this.json('POST', '/v1/replication/resync');
  }
}
