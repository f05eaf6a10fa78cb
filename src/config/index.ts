/**
 * Node configuration, validated once at start-up into a frozen object. A bad field names the field and the rule.
 */
import { quotedUrl } from '../client/options.js';
import { MercuryError } from '../errors/index.js';
import { isLoopbackHost } from '../net/tls.js';
import { HTTP_CONNECTIONS_MAX, REPLICATION_CHILDREN_MAX_CEILING, REPLICATION_CHILDREN_MAX_DEFAULT, UPSTREAMS_MAX, VALUE_BYTES_CEILING } from '../limits.js';
import { WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION } from '../api/index.js';
// Types only: the CLI loads this module for every client command, and must not load the node with it.
import type { NodeLimits } from '../node/limits.js';
import type { TlsPaths } from '../net/tls.js';

export interface NodeConfig {
  /** Data directory holding the LMDB environment. */
  readonly dataDir: string;
  /** HTTP listen address; port 0 picks a free port. */
  readonly host: string;
  readonly port: number;
  /**
   * The operator's limits (`--max-value-bytes`, `--log-retain-entries`, `--log-retain-bytes`); undefined keeps the
   * value of the node's limits (`NodeOptions.limits`, production by default). `withConfigLimits` applies them.
   */
  readonly valueBytesMax: number | undefined;
  readonly logRetainEntries: number | undefined;
  readonly logRetainBytes: number | undefined;
  /** `--max-connections-per-address`: HTTP connections (watches included) one remote address may hold. */
  readonly connectionsPerAddressMax: number | undefined;
  /** Replication listen address, for children. Default: the HTTP host and port + 1 (port 0 when the HTTP port is 0 or 65535). */
  readonly replicationHost: string;
  readonly replicationPort: number;
  /**
   * Wire port (binary point reads and single-key writes, src/api/wire.ts). Default: the HTTP host and port + 2 (port 0
   * when the HTTP port is 0, or when port + 2 would pass 65535).
   */
  readonly wireHost: string;
  readonly wirePort: number;
  /** Upstream replication addresses ("host:port") in order of preference; empty on the root. */
  readonly upstreams: readonly string[];
  /** Children this node serves at most (each holds a socket and a flow-control window). */
  readonly replicationChildrenMax: number;
  /** Start a replica by discarding its chain and taking a full snapshot (the way out of a divergence). */
  readonly resync: boolean;
  /**
   * `--tls-cert`, `--tls-key`, `--tls-ca` (all three or none): HTTPS, wss and mutual TLS on replication, and TLS to
   * the upstream (src/net/tls.ts). Undefined: plaintext everywhere.
   */
  readonly tls: TlsPaths | undefined;
  /** `--insecure`: listen on a non-loopback address without TLS or without authentication (see `checkListenSecurity`). */
  readonly insecure: boolean;
  /**
   * `--advertise-url`: the HTTP URL other nodes reach this one by (`http://host:port`, no path). Children forward
   * writes to it. Undefined: derived from the listen address, which must then be a specific one (not 0.0.0.0 or ::).
   */
  readonly advertiseUrl: string | undefined;
  /**
   * `--allowed-hosts`: Host names the HTTP API answers to besides IP literals, localhost and the node's own listen and
   * advertised names (src/server/request-policy.ts). `.example.com` allows every name under example.com; `*` any.
   */
  readonly allowedHosts: readonly string[];
  /** `--allowed-origins`: web origins (`https://dash.example.com`) whose pages may use the API and watches; `*` any. */
  readonly allowedOrigins: readonly string[];
  /** `--ready-max-lag-ms`: a replica further behind the root than this is not ready (`/readyz`). */
  readonly readyLagMsMax: number;
  /**
   * Root: `--signing-key FILE`, the PEM Ed25519 private key it signs entries and snapshots with; undefined: the key in
   * the data directory, generated at first start (src/trust/keys.ts).
   */
  readonly signingKeyFile: string | undefined;
  /**
   * Root: false with `--unsigned`: entries and snapshots go out without signatures (for measuring what signing costs;
   * replicas with `--trust-key` then refuse everything).
   */
  readonly signing: boolean;
  /** Root: `--previous-signing-key FILE`, the key the chain was signed with so far: the root rotates to the new one. */
  readonly previousSigningKeyFile: string | undefined;
  /**
   * Replica: `--trust-key FILE` (repeatable), PEM Ed25519 public keys; entries and snapshots must be signed by one of
   * them (or by a key a signed rotation introduced). Empty: the replica trusts its upstream.
   */
  readonly trustKeyFiles: readonly string[];
  /**
   * `--root-url URL`: on a replica, where it forwards client writes (instead of its upstream); on the root, the URL it
   * records in a signed entry so that replicas with trusted keys learn where to forward writes.
   */
  readonly rootUrl: string | undefined;
}

export const DEFAULT_PORT = 7070;

/**
 * A replica more than this far behind the root's clock is taken out of rotation by readiness. Live replication keeps
 * a replica well under a second behind; 5 s means it is catching up a backlog (after a restart or a burst), and a
 * load balancer should prefer a node that is not.
 */
export const READY_LAG_MS_MAX_DEFAULT = 5_000;

/** Addresses that mean "every interface": a node can listen on one, but nobody can connect to it. */
const UNSPECIFIED_HOSTS: ReadonlySet<string> = new Set(['0.0.0.0', '::', '[::]', '::0', '0:0:0:0:0:0:0:0']);

export function isUnspecifiedHost(host: string): boolean {
  return UNSPECIFIED_HOSTS.has(host.toLowerCase());
}

export const CONFIG_DEFAULTS: Omit<NodeConfig, 'replicationHost' | 'replicationPort' | 'wireHost' | 'wirePort'> = Object.freeze({
  dataDir: './data',
  host: '127.0.0.1',
  port: DEFAULT_PORT,
  valueBytesMax: undefined,
  logRetainEntries: undefined,
  logRetainBytes: undefined,
  connectionsPerAddressMax: undefined,
  upstreams: [],
  replicationChildrenMax: REPLICATION_CHILDREN_MAX_DEFAULT,
  resync: false,
  tls: undefined,
  insecure: false,
  advertiseUrl: undefined,
  allowedHosts: [],
  allowedOrigins: [],
  readyLagMsMax: READY_LAG_MS_MAX_DEFAULT,
  signingKeyFile: undefined,
  signing: true,
  previousSigningKeyFile: undefined,
  trustKeyFiles: [],
  rootUrl: undefined,
});

function integer(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max)
    throw new MercuryError('CONFIG_INVALID', `${field} must be an integer from ${min} to ${max}, got ${String(value)}`);
  return value;
}

export function validateConfig(input: Partial<NodeConfig>): NodeConfig {
  const merged: Partial<NodeConfig> & typeof CONFIG_DEFAULTS = { ...CONFIG_DEFAULTS, ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) };
  if (typeof merged.dataDir !== 'string' || merged.dataDir.length === 0) throw new MercuryError('CONFIG_INVALID', 'dataDir must be a non-empty path');
  if (typeof merged.host !== 'string' || merged.host.length === 0) throw new MercuryError('CONFIG_INVALID', 'host must be a non-empty host name or address');
  const port = integer('port', merged.port, 0, 65535);
  const upstreams: unknown = merged.upstreams;
  if (!Array.isArray(upstreams) || upstreams.length > UPSTREAMS_MAX || !upstreams.every((upstream) => typeof upstream === 'string'))
    throw new MercuryError('CONFIG_INVALID', `upstreams (--upstream) must list at most ${UPSTREAMS_MAX} HOST:PORT addresses`);
  // Port 0 is for listening (any free port): no one can be reached on it, and a replica would try it once a second.
  for (const upstream of upstreams) parseHostPort(upstream, 'upstream (--upstream)', 1);
  if (merged.resync === true && upstreams.length === 0) throw new MercuryError('CONFIG_INVALID', '--resync needs --upstream: only a replica can resync');
  const trustKeyFiles: unknown = merged.trustKeyFiles;
  if (!Array.isArray(trustKeyFiles) || !trustKeyFiles.every((file) => typeof file === 'string' && file.length > 0))
    throw new MercuryError('CONFIG_INVALID', 'trustKeyFiles (--trust-key) must list key file paths');
  if (trustKeyFiles.length > 0 && upstreams.length === 0)
    throw new MercuryError('CONFIG_INVALID', '--trust-key needs --upstream: the root signs, replicas verify');
  if (upstreams.length > 0 && (merged.signingKeyFile !== undefined || merged.previousSigningKeyFile !== undefined))
    throw new MercuryError('CONFIG_INVALID', '--signing-key and --previous-signing-key are for the root (no --upstream): replicas verify with --trust-key');
  if (merged.signing === false && (upstreams.length > 0 || merged.signingKeyFile !== undefined))
    throw new MercuryError('CONFIG_INVALID', '--unsigned is for a root without --signing-key');
  if (merged.previousSigningKeyFile !== undefined && merged.signingKeyFile === undefined)
    throw new MercuryError('CONFIG_INVALID', '--previous-signing-key needs --signing-key: the new key to rotate to');
  // Checked as --advertise-url is (nodeHttpUrl), and kept as given but for a trailing slash: a root records it in a
  // signed entry, and one that changed form would be recorded again at the next start.
  const rootUrl = merged.rootUrl === undefined ? undefined : nodeHttpUrl('rootUrl', '--root-url', merged.rootUrl).given;
  const replicationHost = typeof merged.replicationHost === 'string' && merged.replicationHost.length > 0 ? merged.replicationHost : merged.host;
  const replicationPort =
    merged.replicationPort === undefined ? (port === 0 ? 0 : port === 65535 ? 0 : port + 1) : integer('replicationPort', merged.replicationPort, 0, 65535);
  const wireHost = typeof merged.wireHost === 'string' && merged.wireHost.length > 0 ? merged.wireHost : merged.host;
  const wirePort = merged.wirePort === undefined ? (port === 0 || port > 65533 ? 0 : port + 2) : integer('wirePort', merged.wirePort, 0, 65535);
  checkDistinctListeners([
    { flag: '--listen', host: merged.host, port },
    { flag: merged.replicationPort === undefined ? '--replication-listen (by default the HTTP port + 1)' : '--replication-listen', host: replicationHost, port: replicationPort },
    { flag: merged.wirePort === undefined ? '--wire-listen (by default the HTTP port + 2)' : '--wire-listen', host: wireHost, port: wirePort },
  ]);
  return Object.freeze({
    dataDir: merged.dataDir,
    host: merged.host,
    port,
    replicationHost,
    replicationPort,
    wireHost,
    wirePort,
    upstreams: Object.freeze([...(upstreams)]),
    replicationChildrenMax: integer('replicationChildrenMax', merged.replicationChildrenMax, 1, REPLICATION_CHILDREN_MAX_CEILING),
    resync: merged.resync === true,
    signingKeyFile: merged.signingKeyFile,
    signing: merged.signing !== false,
    previousSigningKeyFile: merged.previousSigningKeyFile,
    trustKeyFiles: Object.freeze([...(trustKeyFiles as string[])]),
    rootUrl,
    valueBytesMax: optionalInteger('valueBytesMax (--max-value-bytes)', merged.valueBytesMax, 1, VALUE_BYTES_CEILING),
    logRetainEntries: optionalInteger('logRetainEntries (--log-retain-entries)', merged.logRetainEntries, 1, Number.MAX_SAFE_INTEGER),
    logRetainBytes: optionalInteger('logRetainBytes (--log-retain-bytes)', merged.logRetainBytes, 1, Number.MAX_SAFE_INTEGER),
    connectionsPerAddressMax: optionalInteger('connectionsPerAddressMax (--max-connections-per-address)', merged.connectionsPerAddressMax, 1, HTTP_CONNECTIONS_MAX),
    advertiseUrl: advertiseUrl(merged.advertiseUrl, merged.host, port),
    allowedHosts: Object.freeze(stringList('allowedHosts (--allowed-hosts)', merged.allowedHosts).map(allowedHost)),
    allowedOrigins: Object.freeze(stringList('allowedOrigins (--allowed-origins)', merged.allowedOrigins).map(allowedOrigin)),
    readyLagMsMax: integer('readyLagMsMax (--ready-max-lag-ms)', merged.readyLagMsMax, 0, Number.MAX_SAFE_INTEGER),
    tls: validateTlsPaths(merged.tls),
    insecure: merged.insecure === true,
  });
}

/**
 * Two listeners on one port of one address (or of every address: 0.0.0.0 and :: take the port on all of them) made
 * the data directory, then failed on the second listen as if another process held the port (audit, 2026-12-07).
 * Port 0 picks a free port for each.
 */
function checkDistinctListeners(listeners: readonly { flag: string; host: string; port: number }[]): void {
  listeners.forEach((first, i) => {
    for (const second of listeners.slice(i + 1)) {
      const sameHost = first.host.toLowerCase() === second.host.toLowerCase() || isUnspecifiedHost(first.host) || isUnspecifiedHost(second.host);
      if (first.port === 0 || first.port !== second.port || !sameHost) continue;
      const hosts = first.host === second.host ? first.host : `${first.host} and ${second.host}`;
      throw new MercuryError('CONFIG_INVALID', `${first.flag} and ${second.flag} both name port ${first.port} on ${hosts}; give each listener its own port (0: any free port)`);
    }
  });
}

function validateTlsPaths(tls: unknown): TlsPaths | undefined {
  if (tls === undefined) return undefined;
  const paths = (typeof tls === 'object' && tls !== null ? tls : {}) as Partial<Record<keyof TlsPaths, unknown>>;
  const given = [paths.certPath, paths.keyPath, paths.caPath].filter((path) => typeof path === 'string' && path.length > 0).length;
  if (given !== 3) throw new MercuryError('CONFIG_INVALID', 'tls needs --tls-cert, --tls-key and --tls-ca together (the node certificate, its key, the cluster CA)');
  return Object.freeze({ certPath: paths.certPath as string, keyPath: paths.keyPath as string, caPath: paths.caPath as string });
}

/**
 * Secure unless told otherwise (as Redis's protected mode): a node listens on a non-loopback address (HTTP,
 * replication or wire) only with TLS and authentication, or with `--insecure`. `auth` is the node's authentication mode
 * (src/auth: 'required' or 'off'); absent counts as off. Throws CONFIG_INVALID naming the flags.
 */
export function checkListenSecurity(config: NodeConfig, auth: unknown): void {
  if (config.insecure) return;
  const listeners: [string, number][] = [
    [config.host, config.port],
    [config.replicationHost, config.replicationPort],
    [config.wireHost, config.wirePort],
  ];
  const exposed = listeners.filter(([host]) => !isLoopbackHost(host)).map(([host, port]) => `${host}:${port}`);
  const named = exposed.length < 2 ? exposed.join('') : `${exposed.slice(0, -1).join(', ')} and ${exposed[exposed.length - 1]}`;
  if (exposed.length === 0) return;
  const missing = [...(config.tls === undefined ? ['TLS (--tls-cert, --tls-key, --tls-ca)'] : []), ...(auth === 'required' ? [] : ['authentication (--auth required)'])];
  if (missing.length === 0) return;
  throw new MercuryError(
    'CONFIG_INVALID',
    `refusing to listen on ${named} without ${missing.join(' and ')}: other hosts could read and write every key. ` +
      'Give them, listen on 127.0.0.1, or pass --insecure to accept the risk',
  );
}

/**
 * The advertised URL, checked: children forward writes there, so it must name this node from elsewhere. Without one,
 * an unspecified listen address is refused rather than advertised (a child would forward to 0.0.0.0, itself).
 */
function advertiseUrl(value: unknown, host: string, port: number): string | undefined {
  if (value === undefined) {
    if (isUnspecifiedHost(host))
      throw new MercuryError(
        'CONFIG_INVALID',
        `--listen ${host.includes(':') ? `[${host}]` : host}:${port} listens on every address, so it names none that other nodes can forward writes to: add --advertise-url http://NAME:${port}, with a name or address other hosts reach this node by`,
      );
    return undefined;
  }
  return nodeHttpUrl('advertiseUrl', '--advertise-url', value).url.origin;
}

/**
 * A URL other nodes send requests to (`--advertise-url`, `--root-url`): http(s)://HOST[:PORT] as the client takes one
 * (validateNodeUrl), naming a host that others reach. A user and password would be sent as Basic authentication, and a
 * root records its --root-url in a signed entry that every replica holds; a query or fragment was put before every
 * route (writes forwarded to "/?q/v1/txn", NOT_FOUND); port 0 reaches nobody. A refused URL is quoted without its
 * password.
 */
function nodeHttpUrl(field: string, flag: string, value: unknown): { url: URL; given: string } {
  const rule = `${field} (${flag}) must be an http:// or https:// URL with a host that other nodes reach this one by, a port from 1 to 65535, and no user name or password, path, query or fragment`;
  if (typeof value !== 'string') throw new MercuryError('CONFIG_INVALID', rule);
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (
    url === undefined ||
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    url.pathname !== '/' ||
    url.search !== '' ||
    url.hash !== '' ||
    url.username !== '' ||
    url.password !== '' ||
    url.hostname === '' ||
    url.port === '0' ||
    // The parser drops an empty query or fragment ("?", "#"), and white space around or in the URL: the text shows them.
    /[?#\s]/.test(value)
  )
    throw new MercuryError('CONFIG_INVALID', `${rule}; got ${quotedUrl(value)}`);
  if (isUnspecifiedHost(url.hostname))
    throw new MercuryError('CONFIG_INVALID', `${flag} ${value} names the unspecified address ${url.hostname}, which means "this host" to whoever connects: give a name or address other hosts reach this node by`);
  return { url, given: value.replace(/\/$/, '') };
}

function stringList(field: string, value: unknown): string[] {
  if (!Array.isArray(value) || !value.every((entry) => typeof entry === 'string')) throw new MercuryError('CONFIG_INVALID', `${field} must be a list of strings`);
  return value;
}

/** An `--allowed-hosts` entry in the form the request policy compares: lower case, no trailing dot. */
function allowedHost(entry: string): string {
  const name = entry.trim().toLowerCase().replace(/\.$/, '');
  if (name === '*') return name;
  if (!/^\.?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name))
    throw new MercuryError('CONFIG_INVALID', `--allowed-hosts: "${entry}" is not a host name (examples: mercury.example.com; .example.com for every name under it; * for any name)`);
  return name;
}

/** An `--allowed-origins` entry as browsers send it: `scheme://host[:port]`, lower case, without a default port. */
function allowedOrigin(entry: string): string {
  const trimmed = entry.trim();
  if (trimmed === '*') return trimmed;
  let url: URL | undefined;
  try {
    url = new URL(trimmed);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '')
    throw new MercuryError('CONFIG_INVALID', `--allowed-origins: "${entry}" is not an origin (scheme://host[:port] without a path; example: https://dashboard.example.com; * for any)`);
  return url.origin;
}

function optionalInteger(field: string, value: unknown, min: number, max: number): number | undefined {
  return value === undefined ? undefined : integer(field, value, min, max);
}

/**
 * The node's limits with the operator's flags applied: `--max-value-bytes` sets `commit.valueBytesMax`, the
 * `--log-retain-*` flags `log.retainEntries` and `log.retainBytes`, `--max-connections-per-address`
 * `http.connectionsPerAddressMax` (and the watch prefix bytes an address may hold). The node validates the result once
 * (`validateNodeLimits`), with every relation across sections.
 */
export function withConfigLimits(config: NodeConfig, limits: NodeLimits): NodeLimits {
  return {
    ...limits,
    commit: { ...limits.commit, valueBytesMax: config.valueBytesMax ?? limits.commit.valueBytesMax },
    http: { ...limits.http, connectionsPerAddressMax: config.connectionsPerAddressMax ?? limits.http.connectionsPerAddressMax },
    // An address allowed more connections may hold more watch prefixes too (WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION).
    watch:
      config.connectionsPerAddressMax === undefined
        ? limits.watch
        : {
            ...limits.watch,
            prefixBytesPerAddressMax: Math.max(limits.watch.prefixBytesPerConnectionMax, config.connectionsPerAddressMax * WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION),
          },
    log: { ...limits.log, retainEntries: config.logRetainEntries ?? limits.log.retainEntries, retainBytes: config.logRetainBytes ?? limits.log.retainBytes },
  };
}

/**
 * Parses "host:port", "[v6]:port" or ":port"; a port below `portMin` is refused. An IPv6 address without brackets is
 * told to take them (the generic message left the operator to guess), and a port with leading zeros is refused: it
 * may mean something else to whoever wrote it (octal), and the address would be logged differently from how it was
 * given.
 */
export function parseHostPort(text: string, field: string, portMin = 0): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  if (match === null) {
    const hint = /^[^[\]]*:[^[\]]*:/.test(text) ? ' (an IPv6 address goes in brackets: [::1]:7070)' : '';
    throw new MercuryError('CONFIG_INVALID', `${field} must be HOST:PORT${hint}, got "${text}"`);
  }
  if (/^0\d/.test(match[3]!)) throw new MercuryError('CONFIG_INVALID', `${field} port must be written without leading zeros, got "${text}"`);
  const host = match[1] ?? match[2] ?? '';
  return { host: host === '' ? '127.0.0.1' : host, port: integer(`${field} port`, Number(match[3]), portMin, 65535) };
}
