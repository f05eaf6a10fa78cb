/**
 * Node configuration, validated once at start-up into a frozen object. A bad field names the field and the rule.
 */
import { MercuryError } from '../errors/index.js';
import {
  LOG_RETAIN_BYTES_DEFAULT,
  LOG_RETAIN_ENTRIES_DEFAULT,
  VALUE_BYTES_CEILING,
  VALUE_BYTES_MAX_DEFAULT,
} from '../limits.js';

export interface NodeConfig {
  /** Data directory holding the LMDB environment. */
  readonly dataDir: string;
  /** HTTP listen address; port 0 picks a free port. */
  readonly host: string;
  readonly port: number;
  readonly valueBytesMax: number;
  readonly logRetainEntries: number;
  readonly logRetainBytes: number;
}

export const DEFAULT_PORT = 7070;

export const CONFIG_DEFAULTS: NodeConfig = Object.freeze({
  dataDir: './data',
  host: '127.0.0.1',
  port: DEFAULT_PORT,
  valueBytesMax: VALUE_BYTES_MAX_DEFAULT,
  logRetainEntries: LOG_RETAIN_ENTRIES_DEFAULT,
  logRetainBytes: LOG_RETAIN_BYTES_DEFAULT,
});

function integer(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max)
    throw new MercuryError('CONFIG_INVALID', `${field} must be an integer from ${min} to ${max}, got ${String(value)}`);
  return value;
}

export function validateConfig(input: Partial<NodeConfig>): NodeConfig {
  const merged = { ...CONFIG_DEFAULTS, ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) };
  if (typeof merged.dataDir !== 'string' || merged.dataDir.length === 0) throw new MercuryError('CONFIG_INVALID', 'dataDir must be a non-empty path');
  if (typeof merged.host !== 'string' || merged.host.length === 0) throw new MercuryError('CONFIG_INVALID', 'host must be a non-empty host name or address');
  return Object.freeze({
    dataDir: merged.dataDir,
    host: merged.host,
    port: integer('port', merged.port, 0, 65535),
    valueBytesMax: integer('valueBytesMax (--max-value-bytes)', merged.valueBytesMax, 1, VALUE_BYTES_CEILING),
    logRetainEntries: integer('logRetainEntries (--log-retain-entries)', merged.logRetainEntries, 1, Number.MAX_SAFE_INTEGER),
    logRetainBytes: integer('logRetainBytes (--log-retain-bytes)', merged.logRetainBytes, 1, Number.MAX_SAFE_INTEGER),
  });
}

/** Parses "host:port", "[v6]:port" or ":port". */
export function parseHostPort(text: string, field: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  if (match === null) throw new MercuryError('CONFIG_INVALID', `${field} must be HOST:PORT, got "${text}"`);
  const host = match[1] ?? match[2] ?? '';
  return { host: host === '' ? '127.0.0.1' : host, port: integer(`${field} port`, Number(match[3]), 0, 65535) };
}
