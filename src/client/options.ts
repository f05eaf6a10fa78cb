/**
 * Options of `connect`, validated once into a frozen object; a bad option throws `ClientOptionsError` naming the
 * option and the rule.
 */
import { ClientOptionsError } from './errors.js';
import type { ClientTls } from './tls.js';
import {
  ATTEMPTS_MAX_CEILING,
  ATTEMPTS_MAX_DEFAULT,
  REQUEST_TIMEOUT_MS_DEFAULT,
  RETRY_DELAY_MS_BASE_DEFAULT,
  RETRY_DELAY_MS_MAX_DEFAULT,
  WATCH_BUFFER_BYTES_MAX_DEFAULT,
  WATCH_IDLE_MS_DEFAULT,
  WATCH_RECONNECT_DELAY_MS_BASE_DEFAULT,
  WATCH_RECONNECT_DELAY_MS_MAX_DEFAULT,
} from './limits.js';

/** Options of `connect`. Every one is optional; limits.ts has the defaults. */
export interface ClientOptions {
  /** Each HTTP attempt may take this long (ms, 1..600,000; default 10,000). */
  readonly requestTimeoutMs?: number;
  /** Attempts per call across all URLs, the first included (1..100; default 4). */
  readonly attemptsMax?: number;
  /** Backoff before retry n: random in [0, min(retryDelayMsMax, retryDelayMsBase * 2^n)] (ms; defaults 50 and 2,000). */
  readonly retryDelayMsBase?: number;
  readonly retryDelayMsMax?: number;
  /** Watches: same backoff between reconnects (ms; defaults 100 and 5,000). */
  readonly watchReconnectDelayMsBase?: number;
  readonly watchReconnectDelayMsMax?: number;
  /**
   * Watches: consecutive failed connection attempts before the watch gives up with `NoNodeReachableError`
   * (default: never give up; a successful subscribe resets the count).
   */
  readonly watchReconnectAttemptsMax?: number;
  /** Watches: a connection silent for this long is taken as dead (ms, >= 20,000 so heartbeats fit; default 30,000). */
  readonly watchIdleMs?: number;
  /** Watches: bytes of received, undelivered messages before the socket stops being read (default 1 MiB). */
  readonly watchBufferBytesMax?: number;
  /** https and wss: PEM of the CA that signs the nodes' certificates (the cluster CA); default: the system's CAs. */
  readonly ca?: string | Buffer;
  /** https and wss: PEM client certificate and its key, for nodes that map client certificates to principals. */
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
  /** The bearer token sent with every request and watch (`mcy_...`, from `mercury token create`). */
  readonly token?: string;
}

export interface ValidatedClientOptions {
  readonly urls: readonly string[];
  readonly requestTimeoutMs: number;
  readonly attemptsMax: number;
  readonly retryDelayMsBase: number;
  readonly retryDelayMsMax: number;
  readonly watchReconnectDelayMsBase: number;
  readonly watchReconnectDelayMsMax: number;
  readonly watchReconnectAttemptsMax: number;
  readonly watchIdleMs: number;
  readonly watchBufferBytesMax: number;
  /** `ca`, `cert` and `key` (undefined when none was given): one object, so its connections share one agent. */
  readonly tls: ClientTls | undefined;
  /** The Authorization header to send (`Bearer TOKEN`), or undefined without a token. */
  readonly authorization: string | undefined;
}

const KNOWN_OPTIONS = new Set([
  'requestTimeoutMs',
  'attemptsMax',
  'retryDelayMsBase',
  'retryDelayMsMax',
  'watchReconnectDelayMsBase',
  'watchReconnectDelayMsMax',
  'watchReconnectAttemptsMax',
  'watchIdleMs',
  'watchBufferBytesMax',
  'ca',
  'cert',
  'key',
  'token',
]);

function validateTls(options: ClientOptions): ClientTls | undefined {
  for (const name of ['ca', 'cert', 'key'] as const) {
    const value = options[name];
    if (value !== undefined && typeof value !== 'string' && !Buffer.isBuffer(value)) throw new ClientOptionsError(`${name} must be PEM text (a string or a Buffer)`);
  }
  if ((options.cert === undefined) !== (options.key === undefined)) throw new ClientOptionsError('cert and key go together: give both or neither');
  if (options.ca === undefined && options.cert === undefined) return undefined;
  return Object.freeze({ ca: options.ca, cert: options.cert, key: options.key });
}

/** A token travels in a header: printable ASCII without spaces, and short (the node reads at most 256 characters). */
export function isHeaderToken(value: unknown): value is string {
  return typeof value === 'string' && /^[\x21-\x7e]{1,200}$/.test(value);
}

function tokenOption(options: object): string | undefined {
  const value = (options as Record<string, unknown>).token;
  if (value === undefined) return undefined;
  if (!isHeaderToken(value))
    throw new ClientOptionsError('token must be a token string as mercury token create prints it (mcy_..., no spaces)');
  return `Bearer ${value}`;
}

/** An integer option within [min, max], or its default when absent. */
export function integerOption(options: object, name: string, fallback: number, min: number, max: number): number {
  const value = (options as Record<string, unknown>)[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(Number.isSafeInteger(value) || (value === Infinity && max === Infinity)) || value < min || value > max)
    throw new ClientOptionsError(`${name} must be an integer from ${min} to ${max}, got ${typeof value === 'number' ? String(value) : (JSON.stringify(value) ?? typeof value)}`);
  return value;
}

/** How much of a refused URL an error quotes: a 100 KB host name is not echoed whole. */
const QUOTED_URL_CHARS_MAX = 200;

/** `raw` as an error may quote it: a password replaced by `***`, and cut after QUOTED_URL_CHARS_MAX characters. */
export function quotedUrl(raw: string): string {
  const hidden = raw.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, '$1:***@');
  return JSON.stringify(hidden.length > QUOTED_URL_CHARS_MAX ? `${hidden.slice(0, QUOTED_URL_CHARS_MAX)}...` : hidden);
}

/**
 * Checks one node URL (`what` names it in errors: `urls[0]`, `--url`) and returns it without a trailing slash. A node
 * serves its API from the root, so a path is refused: the client would put it before every route, and `put a/b`
 * against `http://host/v1/kv` wrote the key `v1/kv/a/b` (audit, stop 37). Credentials are refused, and never quoted
 * back: Node would send them as Basic authentication, in the clear over http.
 */
export function validateNodeUrl(raw: unknown, what: string): string {
  if (typeof raw !== 'string') throw new ClientOptionsError(`${what} must be a string like "http://127.0.0.1:7070"`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ClientOptionsError(`${what} ${quotedUrl(raw)} is not a URL; give one like "http://127.0.0.1:7070"`);
  }
  if (url.username !== '' || url.password !== '')
    throw new ClientOptionsError(`${what} ${quotedUrl(raw)} must not carry a user name or password: give a token (token option, mercury --token)`);
  if (url.protocol === 'mercury+tcp:' || url.protocol === 'mercury+tls:') {
    // The wire port (get, put and delete only): host and port, nothing else.
    if (url.port === '' || (url.pathname !== '' && url.pathname !== '/'))
      throw new ClientOptionsError(`${what} ${quotedUrl(raw)} must be ${url.protocol}//HOST:PORT, the node's wire port`);
  } else if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ClientOptionsError(`${what} ${quotedUrl(raw)} must use http:, https:, or mercury+tcp: / mercury+tls: (the wire port)`);
  if (url.search !== '' || url.hash !== '') throw new ClientOptionsError(`${what} ${quotedUrl(raw)} must have no query or fragment`);
  if (url.pathname !== '/' && url.pathname !== '')
    throw new ClientOptionsError(`${what} ${quotedUrl(raw)} must have no path: a node serves its API from the root (give "${url.protocol}//${url.host}")`);
  // The scheme as the URL parser reads it (MERCURY+TCP:// is a wire URL too).
  return raw.replace(/^[^:]+/, (scheme) => scheme.toLowerCase()).replace(/\/+$/, '');
}

export function validateClientOptions(urls: unknown, options: ClientOptions = {}): ValidatedClientOptions {
  const list: unknown[] = typeof urls === 'string' ? [urls] : Array.isArray(urls) ? (urls as unknown[]) : [];
  if (list.length === 0) throw new ClientOptionsError('urls must be a node URL or a non-empty array of them');
  if (typeof options !== 'object' || options === null) throw new ClientOptionsError('options must be an object');
  for (const name of Object.keys(options))
    if (!KNOWN_OPTIONS.has(name)) throw new ClientOptionsError(`unknown option "${name}"; known: ${Array.from(KNOWN_OPTIONS).join(', ')}`);
  const validated: ValidatedClientOptions = {
    urls: Object.freeze(list.map((raw, index) => validateNodeUrl(raw, `urls[${index}]`))),
    requestTimeoutMs: integerOption(options, 'requestTimeoutMs', REQUEST_TIMEOUT_MS_DEFAULT, 1, 600_000),
    attemptsMax: integerOption(options, 'attemptsMax', ATTEMPTS_MAX_DEFAULT, 1, ATTEMPTS_MAX_CEILING),
    retryDelayMsBase: integerOption(options, 'retryDelayMsBase', RETRY_DELAY_MS_BASE_DEFAULT, 0, 60_000),
    retryDelayMsMax: integerOption(options, 'retryDelayMsMax', RETRY_DELAY_MS_MAX_DEFAULT, 0, 600_000),
    watchReconnectDelayMsBase: integerOption(options, 'watchReconnectDelayMsBase', WATCH_RECONNECT_DELAY_MS_BASE_DEFAULT, 0, 60_000),
    watchReconnectDelayMsMax: integerOption(options, 'watchReconnectDelayMsMax', WATCH_RECONNECT_DELAY_MS_MAX_DEFAULT, 0, 600_000),
    watchReconnectAttemptsMax: integerOption(options, 'watchReconnectAttemptsMax', Infinity, 1, Infinity),
    watchIdleMs: integerOption(options, 'watchIdleMs', WATCH_IDLE_MS_DEFAULT, 20_000, 3_600_000),
    watchBufferBytesMax: integerOption(options, 'watchBufferBytesMax', WATCH_BUFFER_BYTES_MAX_DEFAULT, 1024, 1024 * 1024 * 1024),
    tls: validateTls(options),
    authorization: tokenOption(options),
  };
  if (validated.retryDelayMsBase > validated.retryDelayMsMax)
    throw new ClientOptionsError(`retryDelayMsBase (${validated.retryDelayMsBase}) must not exceed retryDelayMsMax (${validated.retryDelayMsMax})`);
  if (validated.watchReconnectDelayMsBase > validated.watchReconnectDelayMsMax)
    throw new ClientOptionsError(
      `watchReconnectDelayMsBase (${validated.watchReconnectDelayMsBase}) must not exceed watchReconnectDelayMsMax (${validated.watchReconnectDelayMsMax})`,
    );
  return Object.freeze(validated);
}
