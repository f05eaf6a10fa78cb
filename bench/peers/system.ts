/**
 * The small interface every system under test implements, so that one load driver measures all of them with the same
 * keys, values, concurrency and duration. An adapter owns how its system is started (on loopback, in a temp dir,
 * with comparable durability) and which client library talks to it.
 */
import type { ProcessGroup } from './processes.js';

export const SYSTEM_NAMES = ['mercury', 'etcd', 'redis'] as const;
export type SystemName = (typeof SYSTEM_NAMES)[number];

/** One watcher's view of a change: the key and value as bytes. */
export type WatchListener = (key: string, value: Buffer) => void;

export interface Watch {
  close(): Promise<void>;
}

/**
 * One client of a system: what one of the driver's concurrent loops holds. Operations resolve once the system has
 * acknowledged them (for writes: once durable, as each system defines it under the harness's settings).
 */
export interface KvClient {
  put(key: string, value: Buffer): Promise<void>;
  get(key: string): Promise<Buffer | undefined>;
  /** Writes all entries atomically in one request (etcd txn, Redis MULTI/EXEC, Mercury POST /v1/txn). */
  putBatch(entries: readonly (readonly [string, Buffer])[]): Promise<void>;
  close(): Promise<void>;
}

export interface RunningSystem {
  readonly name: SystemName;
  /** The server process, for its memory. */
  readonly pid: number;
  /** The data directory (Mercury's in-process reader opens it). */
  readonly dataDir: string;
  connect(): Promise<KvClient>;
  /** Other clients of the same server, measured as rows of their own where a workload asks (Mercury's HTTP client). */
  readonly alternativeClients?: readonly { readonly id: string; readonly title: string; connect(): Promise<KvClient> }[];
  /** `watchers` watches of `prefix` spread over `connections` connections; each change calls `listener(watcher, ...)`. */
  watchMany?(prefix: string, watchers: number, connections: number, listener: (watcher: number, key: string, value: Buffer) => void): Promise<Watch>;
  stop(): Promise<void>;
}

export interface RequiredBinary {
  readonly binary: string;
  /** The Debian package that provides it. */
  readonly debianPackage: string;
}

export interface SystemAdapter {
  readonly name: SystemName;
  /** Display name, e.g. "etcd". */
  readonly title: string;
  /** Executables that must be on PATH, with their Debian packages. Mercury needs none. */
  readonly requires: readonly RequiredBinary[];
  /** How the system is configured for the run, in one line, for the results page. */
  readonly settings: string;
  /** The client library and how connections are used, in one line, for the results page. */
  readonly clientDescription: string;
  /** Server and client versions, e.g. "etcd 3.4.23 (client etcd3 1.1.2)". */
  version(): Promise<string>;
  start(group: ProcessGroup): Promise<RunningSystem>;
}
