/**
 * A Mercury node: one data directory (Store), the log trimmer, the HTTP API, watches and replication, wired together.
 * This is the composition root; the pieces it wires know nothing of each other.
 *
 * Roles: without upstreams the node is the root: the group committer builds entries and every durable entry goes to
 * watchers and to child replicas. With upstreams it is a replica: a `ReplicationClient` applies what its upstream
 * sends, and the same fan-out follows every applied batch; client writes are forwarded to the upstream's HTTP API and
 * answered once the replica has applied them (read-your-writes on any node).
 */
import type { KeyObject } from 'node:crypto';
import type { Server } from 'node:http';
import { existsSync } from 'node:fs';
import { isIP, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import type { ClientTls } from '../client/index.js';
import { systemClock, type Clock, type TimerHandle } from '../clock/index.js';
import { GroupCommitter, type WriteRequest, type WriteResult } from '../commit/index.js';
import { MercuryError, isDataCorrupted } from '../errors/index.js';
import type { EncodedEntry, Op } from '../log/index.js';
import { checkListenSecurity, withConfigLimits, type NodeConfig } from '../config/index.js';
import { silentLogger, type Logger } from '../logging/index.js';
import { COUNT_BUCKETS, Registry, SECONDS_BUCKETS } from '../metrics/index.js';
import { TlsCredentials, serverTlsOptions, type TlsMaterial } from '../net/index.js';
import { PROTOCOL_VERSION, ReplicationClient, ReplicationServer, RootHeartbeats, StoreLogSource, type Heartbeat } from '../replication/index.js';
import { SNAPSHOT_FORMAT_VERSION } from '../snapshot/index.js';
import { BodyBudget, clientCertificateRefusal, createApiHandler, createHttpServer, pipelinedAhead, requestRefusal, type NodeApi, type RequestPolicy, type WriteCaller } from '../server/index.js';
import { INITIALISED_FILE, readersFull, refusedAtStart, Store } from '../store/index.js';
import { freeBytesOrUnknown } from '../fs/free-space.js';
import { AuthGuard, AUTH_MODES, bootstrapAdmin, parseToken, readTokenFile, TOKEN_CHARS, TOKEN_KEY_PREFIX, TokenRegistry, writeTokenFile, type AuthMode } from '../auth/index.js';
import { prefixEnd, WIRE_PROTOCOL_VERSION } from '../api/index.js';
import { ROOT_KEY_KEY, ROOT_URL_KEY, SIGNING_PUBLIC_KEY_FILE, Signer, entrySignedMessage, keyId, loadOrCreateSigningKey, publicKeyFromRaw, rawPublicKey, readSigningKey, readTrustKey, verifies } from '../trust/index.js';
import { ForwardsInFlight, forwardWrite } from './forward.js';
import { LISTENERS, listenFailure } from './listen-failure.js';
import { readiness } from './readiness.js';
import { SeqWaiter } from './seq-waiter.js';
import { WatchHub } from '../watch/index.js';
import { WireServer } from '../wire/index.js';
import { fitOpenFiles, NODE_LIMITS, openFilesNeeded, validateNodeLimits, type NodeLimits } from './limits.js';
import { openFilesHeld, openFilesLimit } from './open-files.js';

export interface NodeOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
  /**
   * Every limit and timing of the node (src/node/limits.ts): NODE_LIMITS by default; tests pass NODE_LIMITS_TEST, or
   * `withLimits(NODE_LIMITS, {...})` to change a few (benchmarks that run hundreds of nodes in one process shrink the
   * LMDB map to save address space). The config's operator flags are applied on top, then the whole is validated.
   */
  readonly limits?: NodeLimits;
  /**
   * `required` (the default): every request, watch and child replica needs a token (or a verified client certificate
   * that a grant names) with the right scopes (src/auth/). `off`: no checks, for tests and hosts where everything that
   * can reach the node is trusted.
   */
  readonly auth?: AuthMode;
  /**
   * A root that holds no token at start registers this file's token as its admin token (`--admin-token-file`);
   * without it, it writes a new one to `<dataDir>/admin-token` (src/auth/bootstrap.ts).
   */
  readonly adminTokenFile?: string;
  /** The token a replica presents to its upstreams in HELLO (`--replication-token-file`); it needs `replicate`. */
  readonly replicationToken?: string;
  /** How many log lines the process's log refused so far (`mercury serve`: src/logging's StderrLines), for /metrics. */
  readonly logLinesLost?: () => number;
}

/** After a storage write failure, readiness tries a small write at most this often to see whether space came back. */
const STORAGE_PROBE_INTERVAL_MS = 1_000;

export const MERCURY_VERSION = '0.1.0';

/**
 * Whether ops may write reserved keys (those starting with a zero byte: tokens, the root's key and URL). A range
 * starting above the zero byte cannot reach them.
 */
function touchesReservedKeys(ops: readonly Op[]): boolean {
  for (const op of ops) if ((op.type === 'deleteRange' ? op.start[0] : op.key[0]) === 0) return true;
  return false;
}

/**
 * Every token record in the store (the token registry's source), a damaged one as its DATA_CORRUPTED error. Found: a
 * reload that met one (after a snapshot install, or a range delete over the token keys) threw out of the node's
 * callbacks with every token after it in key order dropped: on the root out of the group committer (an unhandled
 * rejection, which ends the process), on a replica out of the replication client (replication halted).
 */
function* readTokenRecords(store: Store): Generator<{ key: Buffer; value: Buffer; damage?: undefined } | { key: Buffer; value?: undefined; damage: Error }> {
  for (const { key, record, damage } of store.readRangeChecked(TOKEN_KEY_PREFIX, prefixEnd(TOKEN_KEY_PREFIX))) yield damage === undefined ? { key, value: record.value } : { key, damage };
}

export class MercuryNode {
  readonly config: NodeConfig;
  /** The limits this node runs with, validated, the operator's flags applied. */
  readonly limits: NodeLimits;
  readonly store: Store;
  readonly metrics = new Registry();
  /** The root's entry builder; undefined on a replica. */
  readonly committer: GroupCommitter | undefined;
  /** WebSocket watches on /v1/watch; fed every entry this node applies. */
  readonly watchHub: WatchHub;
  readonly replicationServer: ReplicationServer;
  /** The wire port: binary get, put and delete for `mercury+tcp://` (or `mercury+tls://`) clients (src/wire/). */
  readonly wireServer: WireServer;
  /** Follows the upstream; undefined on the root. */
  readonly replicationClient: ReplicationClient | undefined;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly seqWaiter: SeqWaiter;
  /** HTTP reads parked on `minSeq`, by token id: told of a revocation or a regrant, they check the token again (NodeApi.onGrantChanged). */
  private readonly grantListeners = new Map<string, Set<() => void>>();
  /**
   * Writes forwarded to the upstream and not yet answered (a replica): at most `limits.http.forwardedWritesMax`; ended
   * when replication finds their upstream silent (record 86).
   */
  private readonly forwards = new ForwardsInFlight();
  private readonly server: Server;
  private readonly startedMs: number;
  /** Which Host names and Origins the HTTP API and watches accept (src/server/request-policy.ts). */
  private readonly requestPolicy: RequestPolicy;
  private trimTimer: TimerHandle | undefined;
  private heartbeatTimer: TimerHandle | undefined;
  /** The one timer for the earliest token expiry (armExpiry), and the time it is armed for. */
  private expiryTimer: TimerHandle | undefined;
  private expiryArmedForMs: number | undefined;
  private latestHeartbeat: Heartbeat | undefined;
  /** The head seq at the last trim that completed: the log was within its bounds then. */
  private trimmedAtSeq = -1;
  /** Set once the start has gone through: damage met before it refuses the start rather than being logged as met while serving. */
  private serving = false;
  private trimming = false;
  /** Set when close() begins: the trimmer is not armed again. */
  private closing = false;
  private lastStorageProbeMs = -Infinity;
  /**
   * A replica's forwarded writes waiting for their seq, each told of the next storage write failure: its own apply of
   * the write failed, and the wait would last its whole forwardedWriteWaitMs. A set, not one long-lived AbortSignal
   * that each wait joins with AbortSignal.any: Node 20 keeps a reference per joined signal on the long-lived one
   * (about 60 bytes per write, never freed).
   */
  private readonly forwardWaits = new Set<(fault: MercuryError) => void>();
  private readonly appliedListeners: ((entries: readonly EncodedEntry[]) => void)[] = [];
  /** The TLS files (`--tls-*`), reloaded when they change; undefined without TLS. */
  private readonly tls: TlsCredentials | undefined;
  /**
   * What write forwarding uses toward the upstream's https API (replaced on each reload, so agents follow): the CA
   * only. The node's own certificate never goes with a forwarded write: the root would take its subject's grant as the
   * writer's (audit, 2026-12-06); a write is forwarded with its caller's token, or refused (`forwardCaller`).
   */
  private forwardTls: ClientTls | undefined;
  /** The tokens this node knows, from its replicated records (src/auth/registry.ts). */
  readonly tokens: TokenRegistry;
  private readonly guard: AuthGuard;
  private readonly adminTokenFile: string | undefined;
  /** Logs that a secret file this node reads (a token, a private key) lets others in (src/fs/bounded-read.ts). */
  private readonly warnSecretFile = (message: string, fields: { readonly file: string; readonly mode: string }): void => this.logger.log('warn', message, fields);
  /** The root's signer (src/trust/); undefined on a replica. */
  private readonly signer: Signer | undefined;
  /** The root's heartbeats, signed by `signer` when it has one. */
  private readonly heartbeats: RootHeartbeats;
  /** A replica's trusted keys (`--trust-key`); empty: it trusts its upstream. */
  private readonly trustKeys: readonly KeyObject[];
  /** Where the root generated its signing key at this start, said once it is serving. */
  private generatedSigningKey: string | undefined;

  /** `opened` is told of the store as soon as it is open, so that `start` can release it if the constructor fails after. */
  private constructor(config: NodeConfig, options: NodeOptions, opened: (store: Store) => void) {
    this.config = config;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
    this.startedMs = this.clock.monotonicMs();
    // The caps full at once must fit the open files this process may hold, or accept(), a forwarded write, a replica's
    // reconnection or a certificate reload meets EMFILE under load (record 88): lowered to fit, or refused below a floor.
    const openFilesMax = openFilesLimit();
    const configured = validateNodeLimits(withConfigLimits(config, options.limits ?? NODE_LIMITS));
    const fitted = fitOpenFiles(configured, openFilesMax ?? Number.MAX_SAFE_INTEGER);
    this.limits = validateNodeLimits(fitted.limits);
    if (fitted.loweredFrom !== undefined)
      this.logger.log('warn', 'open-files limit below what the caps need: HTTP connections lowered to fit', {
        openFilesMax,
        httpConnectionsMax: this.limits.http.connectionsMax,
        httpConnectionsMaxConfigured: fitted.loweredFrom,
        remedy: `raise the limit to ${openFilesNeeded(configured)} (ulimit -n, systemd LimitNOFILE=, docker --ulimit nofile=)`,
      });
    // Read before the store opens: bad files are a configuration error, and leave nothing open behind them.
    this.tls = config.tls === undefined ? undefined : new TlsCredentials(config.tls, this.logger, this.clock);
    const material = this.tls?.current();
    this.forwardTls = material === undefined ? undefined : { ca: material.ca };
    const isReplica = config.upstreams.length > 0;
    // Key files are read before the data directory is opened: a bad one must not leave it locked.
    this.trustKeys = config.trustKeyFiles.map(readTrustKey);
    const givenSigningKey = config.signingKeyFile === undefined ? undefined : readSigningKey(config.signingKeyFile, '--signing-key', this.warnSecretFile);
    const authMode = options.auth ?? 'required';
    if (!AUTH_MODES.includes(authMode)) throw new MercuryError('CONFIG_INVALID', `auth must be one of ${AUTH_MODES.join(', ')}, got ${String(authMode)}`);
    // A root's first start registers --admin-token-file's token, so a bad file refuses it: checked before the data
    // directory, its store and the signing key are made. Read only at the bootstrap, a refused first start left them all
    // behind (audit, 2026-12-07). A root already made may hold tokens, and then the file is not used (a warning only):
    // its start checks the file after opening the store, as before. Its mode is told of at that read, not twice.
    if (!isReplica && authMode === 'required' && options.adminTokenFile !== undefined && !existsSync(join(config.dataDir, INITIALISED_FILE)))
      readTokenFile(options.adminTokenFile, '--admin-token-file');
    // A replica writes without fsync: it can refetch anything it loses (see Store's noSync and unsynced-guard.ts).
    this.store = Store.open({
      path: config.dataDir,
      createDataset: !isReplica,
      mapBytes: this.limits.store.mapBytes,
      readersMax: this.limits.store.readersMax,
      snapshotReadersMax: this.limits.store.snapshotReadersMax,
      noSync: isReplica,
    });
    opened(this.store);
    // An operator alerts on their ratio: past the caps' sum (mercury_http_connections_max and the reserve), something
    // holds files uncounted.
    this.metrics.gauge('mercury_open_files', 'Files (sockets, LMDB, pipes) this process holds now, from /proc/self/fd; -1 where unknown.', () => openFilesHeld(openFilesMax));
    this.metrics.gauge('mercury_open_files_max', 'The open-files limit of this process (RLIMIT_NOFILE); -1 where unknown. The caps are fitted under it at start (record 88).', () => openFilesMax ?? -1);
    this.metrics.gauge('mercury_http_connections_max', 'HTTP connections the node accepts at once (watches included): http.connectionsMax, lowered at start to fit a smaller open-files limit.', () => this.limits.http.connectionsMax);
    this.metrics.gauge('mercury_snapshot_readers', 'Snapshots being sent now (HTTP, to children, to watches), of store.snapshotReadersMax.', () => this.store.snapshotReaders.inUse);
    this.metrics.gauge(
      'mercury_snapshot_readers_max',
      'Snapshots sent at once past which HTTP answers 503 OVERLOADED: store.snapshotReadersMax, or a quarter of a smaller LMDB reader table in force (mercury_lmdb_readers_max).',
      () => this.store.snapshotReaders.readersMax,
    );
    this.metrics.gauge(
      'mercury_snapshot_readers_refused',
      'Snapshots refused since start for want of a reader: HTTP 503 OVERLOADED, children refused UNAVAILABLE (a counter; waiting watches are not counted).',
      () => this.store.snapshotReaders.refused,
    );
    this.metrics.gauge(
      'mercury_lmdb_readers_max',
      "LMDB's reader table in force: the configured size (store.readersMax) unless another process opened the data directory first with fewer slots.",
      () => this.store.lmdbReadersMax,
    );
    if (this.store.lmdbReadersMax < this.store.lmdbReadersMaxConfigured)
      this.logger.log(
        'warn',
        `LMDB's reader table holds ${this.store.lmdbReadersMax} slots, not the ${this.store.lmdbReadersMaxConfigured} configured: another process (an embedded reader, a backup tool) opened the data directory first with fewer, and holds it open; snapshot readers are capped at ${this.store.snapshotReaders.readersMax} so that reads find slots. Close the other processes on ${config.dataDir}, then restart this node`,
        {
          dataDir: config.dataDir,
          lmdbReadersMax: this.store.lmdbReadersMax,
          lmdbReadersMaxConfigured: this.store.lmdbReadersMaxConfigured,
          snapshotReadersMax: this.store.snapshotReaders.readersMax,
        },
      );
    const discarded = this.store.discardReason;
    if (discarded !== undefined) this.logger.log('warn', `discarded the replica data: ${discarded}; bootstrapping again`, { dataDir: config.dataDir });
    if (this.store.summedLogBytes !== undefined)
      this.logger.log('warn', 'the log size record was damaged: summed the log again and wrote the sum back (it is a cache of that sum)', {
        dataDir: config.dataDir,
        damage: this.store.summedLogBytes,
        logBytes: this.store.logBounds().bytes,
      });
    if (!this.store.readerTableAllocated)
      this.logger.log('warn', "could not give LMDB's reader table (lock.mdb) its disk blocks: should the disk fill, a reader taking a new slot may die of SIGBUS; is util-linux's fallocate installed, and is there room on the disk?", {
        dataDir: config.dataDir,
      });
    if (this.store.discardedInstallRecords > 0)
      this.logger.log('warn', 'discarded the records of a snapshot install that a stop interrupted (never verified)', {
        dataDir: config.dataDir,
        records: this.store.discardedInstallRecords,
      });
    this.requestPolicy = Object.freeze({
      // The node's own names: those it listens on and is advertised by answer without --allowed-hosts.
      allowedHosts: Object.freeze([
        ...[config.host, config.advertiseUrl === undefined ? '' : new URL(config.advertiseUrl).hostname.replace(/^\[|\]$/g, '')]
          .map((name) => name.toLowerCase())
          .filter((name) => name !== '' && isIP(name) === 0),
        ...config.allowedHosts,
      ]),
      allowedOrigins: config.allowedOrigins,
    });
    if (isReplica || !config.signing) this.signer = undefined;
    else {
      const head = this.store.head();
      const signedHeadSeq = head.seq > 0 && this.store.readLog(head.seq, 1)[0]?.entry.signature !== undefined ? head.seq : undefined;
      const loaded =
        givenSigningKey === undefined ? loadOrCreateSigningKey(config.dataDir, undefined, signedHeadSeq, this.warnSecretFile) : { key: givenSigningKey, generated: false, path: config.signingKeyFile };
      this.signer = new Signer(loaded.key);
      if (loaded.generated) this.generatedSigningKey = loaded.path;
      if ('publicRewritten' in loaded && loaded.publicRewritten === true)
        this.logger.log('warn', 'signing-key.pub.pem was damaged (not the public half of signing-key.pem): written again from the private key; a replica that copied it for --trust-key needs this copy', {
          path: join(config.dataDir, SIGNING_PUBLIC_KEY_FILE),
        });
    }
    this.heartbeats = new RootHeartbeats(this.signer);
    this.seqWaiter = new SeqWaiter(this.clock, () => this.store.head().seq, this.limits.http.seqWaitersMax);
    this.metrics.gauge('mercury_seq_waiters', 'Reads parked until this node applies the seq they asked for (minSeq); at most limits.http.seqWaitersMax (SEQ_WAITERS_MAX).', () => this.seqWaiter.waiting);
    // Beside the parked reads: a stalled or silent root shows here first (each forward holds a socket to it), and a
    // value stuck above 0 once the writers are gone would be a leak of the slots OVERLOADED counts against.
    this.metrics.gauge(
      'mercury_forwards_in_flight',
      'Writes this replica has forwarded to its upstream (or --root-url) and that are not answered yet; at most limits.http.forwardedWritesMax (FORWARDED_WRITES_MAX). 0 on the root.',
      () => this.forwards.size,
    );
    this.metrics.counterReading(
      'mercury_forwards_upstream_silent_total',
      'Forwarded writes ended before their answer because replication dropped their upstream as stale (answered 503 UPSTREAM_UNAVAILABLE at once, not at the 30 s forward timeout). 0 on the root.',
      () => this.forwards.endedSilent,
    );
    this.tokens = new TokenRegistry(
      () => readTokenRecords(this.store),
      (key, why) => this.logger.log('warn', 'ignored an invalid token record', { key: key.toString('latin1'), why }),
      (key, damage) => {
        // At start it refuses the start (refusedAtStart): serving with a token missing, a root with none left would
        // register a new admin token. While serving, that one token fails closed and the rest go on.
        if (!this.serving) throw damage;
        this.logger.log('error', 'a token record is damaged: that token authenticates nothing on this node; every other token goes on (see "Damaged data" in the README)', {
          key: key.toString('latin1'),
          error: damage.message,
        });
      },
      this.clock,
    );
    this.guard = new AuthGuard(authMode, this.tokens);
    this.adminTokenFile = options.adminTokenFile;
    this.metrics.gauge('mercury_applied_seq', 'Seq of the last entry applied on this node.', () => this.store.head().seq);
    // The process's memory, under the names Prometheus's Node.js clients use, so that existing dashboards find them.
    // External memory holds the buffers that requests and frames are gathered in: what a hostile peer would grow.
    this.metrics.gauge('process_resident_memory_bytes', 'Resident memory of the node process.', () => process.memoryUsage.rss());
    this.metrics.gauge('nodejs_heap_used_bytes', 'JavaScript heap in use.', () => process.memoryUsage().heapUsed);
    this.metrics.gauge('nodejs_external_memory_bytes', 'Memory of buffers and other objects outside the JavaScript heap.', () => process.memoryUsage().external);
    const damageMet = this.metrics.counter('mercury_data_corruption_total', 'Reads that met damaged data (a log entry failing its chain check, a key record failing its checksum).');
    const storageErrors = this.metrics.counter('mercury_storage_errors_total', 'Write transactions that failed for the storage (disk full, I/O error), by code.');
    // What the space guard reads (src/store/space-guard.ts): it refuses a write once less than the write may need and
    // 4 MiB is left, so an operator watches this rather than waiting for the refusals.
    const dataDir = this.store.path;
    this.metrics.gauge('mercury_storage_free_bytes', "Bytes free for this node on its data directory's disk (-1 when that cannot be told); writes are refused once less than a write may need and 4 MiB is left.", () => freeBytesOrUnknown(dataDir) ?? -1);
    const logLinesLost = options.logLinesLost;
    if (logLinesLost !== undefined)
      this.metrics.counterReading('mercury_log_lines_lost_total', "Log lines this node's log refused (a log file on a full disk, a closed pipe, a pipe nobody reads past 1 MiB waiting): lost, not retried.", logLinesLost);
    this.store.onWriteFault((fault) => {
      if (fault === undefined) {
        this.logger.log('info', 'storage writable again', {});
        return;
      }
      storageErrors.inc(1, { code: fault.code });
      this.logger.log('error', 'write failed: storage', { code: fault.code, error: fault.message });
      for (const ended of this.forwardWaits) ended(fault);
    });
    this.store.onDamage((report) => {
      // Met by the start itself (a key record it reads), it refuses the start instead: see refusedAtStart.
      if (!this.serving) return;
      damageMet.inc();
      this.logger.log('error', 'damaged data met while serving; only that reader failed; the node is not ready', { damaged: report.what, error: report.message });
    });
    const api: NodeApi = {
      store: this.store,
      clock: this.clock,
      metrics: this.metrics,
      valueBytesMax: this.limits.commit.valueBytesMax,
      write: (request, caller) => this.write(caller?.author === undefined ? request : { ...request, author: caller.author }, this.forwardCaller(caller), caller?.gone),
      authenticate: (req) => this.guard.authenticateRequest(req),
      currentPrincipal: (principal) => this.guard.current(principal),
      tokens: () => this.tokens.list(),
      unreadableTokens: () => this.tokens.unreadableRecords(),
      waitForSeq: (seq, timeoutMs, gone) => this.seqWaiter.wait(seq, timeoutMs, gone),
      onGrantChanged: (tokenId, listener) => {
        let listeners = this.grantListeners.get(tokenId);
        if (listeners === undefined) this.grantListeners.set(tokenId, (listeners = new Set()));
        listeners.add(listener);
        return () => {
          if (listeners.delete(listener) && listeners.size === 0 && this.grantListeners.get(tokenId) === listeners) this.grantListeners.delete(tokenId);
        };
      },
      status: () => this.status(),
      readiness: () => this.readiness(),
      resync: () => this.resync(),
      log: (message, fields, level = 'error') => this.logger.log(level, message, fields),
      requestPolicy: this.requestPolicy,
    };
    const tlsRejected = this.metrics.counter('mercury_tls_rejected_total', 'Connections refused for TLS, by port and reason (wrong protocol, untrusted or expired certificate, failed handshake).');
    const onTlsRejected = (port: 'http' | 'replication' | 'wire') => (reason: string, remote: string, message: string) => {
      tlsRejected.inc(1, { port, reason });
      this.logger.log('warn', 'TLS connection refused', { port, reason, remote, error: message });
    };
    const onHttpTlsRejected = onTlsRejected('http');
    // One budget of request bodies for the HTTP API and the wire port's PUTs (src/server/body-budget.ts).
    const bodyBudget = new BodyBudget(this.limits.http.bodyBytesInFlightMax, this.limits.http.bodyBytesInFlightPerAddressMax);
    this.server = createHttpServer(createApiHandler(api, this.limits.http, bodyBudget), this.limits.http, this.clock, {
      tls: material,
      onRejected: onHttpTlsRejected,
      track: this.tls?.track,
    });
    const server = this.server;
    this.metrics.gauge(
      'mercury_http_pipelined_ahead',
      `Pipelined requests running ahead of their turn, each holding its answer until the ones before it are sent; at most ${this.limits.http.pipelinedAheadMax}.`,
      () => pipelinedAhead(server),
    );
    const policy = this.requestPolicy;
    this.watchHub = new WatchHub({
      store: this.store,
      clock: this.clock,
      metrics: this.metrics,
      logger: this.logger,
      root: !isReplica,
      limits: this.limits.watch,
      // An upgrade does not pass the HTTP server's request listener: its client certificate is checked here, as there.
      refuseUpgrade: (req) => clientCertificateRefusal(req.socket, onHttpTlsRejected) ?? requestRefusal(req, policy),
      authenticate: (req) => this.guard.authenticateRequest(req),
      current: (principal) => this.guard.current(principal),
      heldBudget: bodyBudget,
    });
    this.watchHub.attach(this.server);
    this.replicationServer = new ReplicationServer({
      nodeId: this.store.nodeId,
      httpUrl: () => this.advertisedUrl,
      source: new StoreLogSource(this.store),
      clock: this.clock,
      logger: this.logger,
      ancestors: () => this.replicationClient?.ancestors() ?? [],
      latestHeartbeat: () => (isReplica ? this.latestHeartbeat : this.rootHeartbeat()),
      limits: this.limits.replication,
      childrenMax: config.replicationChildrenMax,
      tls: material,
      onTlsRejected: onTlsRejected('replication'),
      trackTls: this.tls?.track,
      authorizeChild: (credential, socket) => this.guard.authenticateChild(credential, socket),
      recheckChild: (principal) => this.guard.recheckChild(principal),
      signer: this.signer,
      diverged: () => this.replicationClient?.divergence(),
    });
    this.wireServer = new WireServer({
      node: {
        store: this.store,
        valueBytesMax: this.limits.commit.valueBytesMax,
        bodyBudget,
        write: (request, caller) => api.write(request, caller),
        waitForSeq: (seq, timeoutMs, gone) => api.waitForSeq(seq, timeoutMs, gone),
        authenticate: (token, socket) => this.guard.authenticateConnection(token, socket),
        current: (principal) => this.guard.current(principal),
        log: (message, fields) => api.log(message, fields),
      },
      clock: this.clock,
      metrics: this.metrics,
      limits: this.limits.wire,
      tls: material,
      onTlsRejected: onTlsRejected('wire'),
      trackTls: this.tls?.track,
    });
    if (this.tls !== undefined) this.watchTls(this.tls);
    this.metrics.gauge('mercury_replication_children', 'Child replicas connected to this node.', () => this.replicationServer.children().length);
    this.metrics.gauge(
      'mercury_replication_queued_bytes',
      `Bytes queued for child replicas that the kernel has not taken; a frame that would take a child past ${this.limits.replication.childQueuedBytesShare} and them past ${this.limits.replication.childrenQueuedBytesMax} waits until they read.`,
      () => this.replicationServer.queuedBytes(),
    );
    this.metrics.gauge(
      'mercury_replication_queued_address_bytes_max',
      `Of those, the bytes queued for the children of the one remote host that holds the most; past ${this.limits.replication.childrenQueuedBytesPerAddressMax}, its children are sent a frame past their share only when its others have sent theirs.`,
      () => this.replicationServer.queuedBytesOfBusiestAddress(),
    );
    this.metrics.counterReading(
      'mercury_replication_snapshot_address_refusals_total',
      `Children refused UNAVAILABLE because the children of their remote host were already sent ${this.limits.replication.childSnapshotsPerAddressMax} snapshots (each holds a snapshot reader); they retry after their backoff.`,
      () => this.replicationServer.snapshotAddressRefusalCount,
    );
    if (isReplica) {
      this.committer = undefined;
      this.replicationClient = this.createReplicationClient(options.replicationToken);
    } else {
      this.replicationClient = undefined;
      const signer = this.signer;
      this.committer = new GroupCommitter({
        store: this.store,
        clock: this.clock,
        metrics: this.metrics,
        limits: this.limits.commit,
        sign: signer === undefined ? undefined : (hash) => signer.signEntry(hash),
        logger: this.logger,
      });
      this.committer.onCommitted((committed) => this.applied([committed]));
    }
  }

  /** Every user of the credentials takes a reload: the servers for new handshakes, the clients for new connections. */
  private watchTls(tls: TlsCredentials): void {
    tls.onReload((material: TlsMaterial) => {
      (this.server as unknown as TlsServer).setSecureContext(serverTlsOptions(material));
      this.replicationServer.setTls(material);
      this.wireServer.setTls(material);
      this.forwardTls = { ca: material.ca };
    });
    this.metrics.gauge('mercury_tls_reloads', 'Successful reloads of the TLS files (a counter).', () => tls.reloads);
    this.metrics.gauge('mercury_tls_closed_on_ca_change', 'Connections closed because a new CA file no longer signed their peer certificate (a counter).', () => tls.closedOnCaChange);
    this.metrics.gauge('mercury_tls_closed_on_peer_expiry', "Open connections closed because their peer's certificate expired after their handshake (a counter).", () => tls.closedOnPeerExpiry);
    this.metrics.gauge('mercury_tls_reload_failures', 'Reloads of the TLS files that failed and kept the previous certificate (a counter).', () => tls.reloadFailures);
    this.metrics.gauge('mercury_tls_certificate_expiry_seconds', "Seconds until this node's certificate expires (negative: expired).", () =>
      Math.round((tls.current().validToMs - this.clock.nowMs()) / 1000),
    );
  }

  /** Reads the TLS files again (SIGHUP); false when they are bad (the previous ones stay). See TlsCredentials#reload. */
  reloadTls(why = 'requested'): boolean {
    if (this.tls === undefined) return false;
    return this.tls.reload(why);
  }

  /** A replica's link to its upstream, and the metrics that describe it. */
  private createReplicationClient(credential: string | undefined): ReplicationClient {
    const lagSeconds = this.metrics.histogram('mercury_replication_lag_seconds', "How far this node's data is behind the root's clock, sampled at each heartbeat.", SECONDS_BUCKETS);
    const applySeconds = this.metrics.histogram('mercury_replication_apply_seconds', 'Time to apply one batch of received entries (one write transaction).', SECONDS_BUCKETS);
    const batchEntries = this.metrics.histogram('mercury_replication_apply_batch_entries', 'Entries per applied batch.', COUNT_BUCKETS);
    const applied = this.metrics.counter('mercury_replication_entries_applied_total', 'Entries received from the upstream and applied.');
    const snapshots = this.metrics.counter('mercury_replication_snapshots_installed_total', 'Snapshots received and installed.');
    const client = new ReplicationClient({
      store: this.store,
      upstreams: this.config.upstreams,
      clock: this.clock,
      logger: this.logger,
      limits: this.limits.replication,
      tls: this.tls === undefined ? undefined : () => this.tls!.current(),
      trackTls: this.tls?.track,
      httpUrl: () => this.url,
      credential,
      trustKeys: this.trustKeys.length > 0 ? this.trustKeys : undefined,
      onVerified: (entries) => this.forwardVerified(entries),
      onApplied: (entries, applyMs) => {
        applySeconds.observe(applyMs / 1000);
        batchEntries.observe(entries.length);
        applied.inc(entries.length);
        this.applied(entries);
      },
      onHeartbeat: (heartbeat) => {
        this.latestHeartbeat = heartbeat;
        const lagMs = client.status().lagMs;
        if (lagMs !== undefined) lagSeconds.observe(lagMs / 1000);
        this.replicationServer.heartbeat(heartbeat);
      },
      onUpstreamSilent: (httpUrl, reason) => {
        const ended = this.forwards.upstreamSilent(httpUrl, reason, client.status().upstreamSwitches);
        if (ended > 0) this.logger.log('warn', 'ended the writes forwarded to a silent upstream: UPSTREAM_UNAVAILABLE, outcome unknown', { url: httpUrl, ended, reason });
      },
      onChainReset: (seq) => {
        snapshots.inc();
        this.replicationServer.chainReset();
        const { revoked, replaced } = this.tokens.reload();
        this.revoke(revoked);
        this.regranted(replaced);
        this.armExpiry();
        // Every watcher is reset to the new state now: what it was sent may be of the replaced chain (decision 40).
        this.watchHub.chainReplaced(seq);
        this.seqWaiter.notify();
      },
    });
    this.metrics.gauge('mercury_replication_lag_entries', 'Entries the root had at its last heartbeat that this node has not applied.', () => client.status().lagEntries ?? -1);
    this.metrics.gauge('mercury_replication_held_bytes', 'Verified entries read from the upstream and not yet written, weighed as held in memory (about record bytes plus 256 per op).', () => client.held());
    this.metrics.gauge('mercury_replication_held_bytes_peak', 'The most mercury_replication_held_bytes has been since start: how close an upstream came to replication.replicaHeldBytesMax.', () => client.heldPeak());
    this.metrics.gauge('mercury_replication_upstream_switches', 'Times this replica dropped its upstream and moved on (a counter).', () => client.status().upstreamSwitches);
    this.metrics.gauge(
      'mercury_replication_signature_refusals',
      'Times this replica refused entries or a snapshot not signed by a key it trusts, and dropped the upstream (a counter; 0 without --trust-key).',
      () => client.status().trust?.refusals ?? 0,
    );
    this.metrics.gauge('mercury_replication_connected', '1 while this replica streams from an upstream.', () => (client.status().phase === 'streaming' ? 1 : 0));
    this.metrics.gauge(
      'mercury_replication_diverged',
      "1 while this replica has stopped following because its chain differs from its upstream's (resync it).",
      () => (client.status().divergedReason === undefined ? 0 : 1),
    );
    return client;
  }

  /**
   * Replica: entries verified and about to be written go to caught-up children now, so that their hop overlaps this
   * node's write (decision 27). Not a batch that touches reserved keys (tokens, the root's key and URL): a revocation
   * must close what its token opened before anything more is sent with it, and the token registry follows the store,
   * so such a batch goes out after the write, from `applied`, as before.
   */
  private forwardVerified(entries: readonly EncodedEntry[]): void {
    if (entries.some(({ entry }) => touchesReservedKeys(entry.ops))) return;
    this.replicationServer.forwardVerified(entries);
  }

  /** Entries this node has just applied (root: committed and durable; replica: received and written), in seq order. */
  private applied(entries: readonly EncodedEntry[]): void {
    // Tokens first: a revocation must close what its token opened before anything more is sent with it.
    for (const { entry } of entries) {
      const { revoked, replaced } = this.tokens.applied(entry.ops);
      this.revoke(revoked);
      this.regranted(replaced);
    }
    this.replicationServer.localApplied(entries);
    this.watchHub.publish(entries);
    this.seqWaiter.notify();
    for (const listener of this.appliedListeners) listener(entries);
    this.armTrim();
    this.armExpiry();
  }

  /**
   * Arms the node's one expiry timer for the earliest expiry among its tokens, if that changed (tokens were created,
   * revoked or replaced). When it fires, the tokens expired by this node's clock end what they opened as a revocation
   * does (watches 4401, wire connections, child sessions, reads parked on minSeq); every door refuses them already
   * (registry.ts). One timer whatever the number of tokens; a far expiry is reached in steps (TIMER_DELAY_MS_MAX).
   */
  private armExpiry(): void {
    const nextMs = this.closing ? undefined : this.tokens.nextExpiryMs();
    if (nextMs === this.expiryArmedForMs) return;
    this.expiryTimer?.cancel();
    this.expiryTimer = undefined;
    this.expiryArmedForMs = nextMs;
    if (nextMs === undefined) return;
    this.expiryTimer = this.clock.setTimeout(() => {
      this.expiryTimer = undefined;
      this.expiryArmedForMs = undefined;
      const ended = new Map(this.tokens.expire().map(({ id, why }) => [id, why]));
      this.revoke([...ended.keys()], (id) => ended.get(id)!);
      this.armExpiry();
    }, Math.max(0, nextMs - this.clock.nowMs()));
  }

  /**
   * Tokens given other grants: everything opened under the old grant is checked against the new one now, each by its
   * own admission check, and ends only if that no longer passes (decision 57): reads parked on `minSeq` (HTTP and
   * wire) are refused, watches closed (4409), child sessions refused, wire connections whose credential was replaced
   * ended (audit, 2026-12-06). A change that only widens a grant, or renames it, ends nothing: the watches and sessions
   * go on under the new grant. HTTP and wire requests check the current grant each time already.
   */
  private regranted(tokenIds: readonly string[]): void {
    if (tokenIds.length === 0) return;
    this.logger.log('info', 'token grants changed', { tokens: tokenIds });
    // A copy: a listener may be forgotten while they run. They stay registered: the read waits on if still allowed.
    for (const id of tokenIds) for (const listener of [...(this.grantListeners.get(id) ?? [])]) listener();
    this.watchHub.regranted(tokenIds);
    this.replicationServer.regranted(tokenIds);
    this.wireServer.regranted(tokenIds);
  }

  /**
   * Closes the watches and child sessions opened with revoked tokens, and ends the HTTP reads they parked on `minSeq`
   * (each answered 401; keep-alive HTTP requests check every time). `why`: what ended each token, when not a
   * revocation (an expiry).
   */
  private revoke(tokenIds: readonly string[], why?: (tokenId: string) => string): void {
    if (tokenIds.length === 0) return;
    this.logger.log('info', why === undefined ? 'tokens revoked' : 'tokens expired', { tokens: tokenIds });
    for (const id of tokenIds) {
      const listeners = this.grantListeners.get(id);
      this.grantListeners.delete(id);
      for (const listener of listeners ?? []) listener();
    }
    this.watchHub.revoke(tokenIds, why);
    this.replicationServer.revoke(tokenIds, why);
    this.wireServer.revoke(tokenIds, why);
  }

  /**
   * A root with auth required and no token at all registers an admin token (bootstrap.ts): its secret written to the
   * file first (durably), then committed. The other order left a root that crashed, or failed to write the file,
   * between the two holding a token nobody had, and it never made another: no operator could get in. This way a
   * crash between the two leaves a file naming a token the root does not know (401), replaced at the next start.
   */
  private async bootstrapAdmin(): Promise<void> {
    if (this.committer === undefined || !this.guard.required) return;
    if (this.tokens.size > 0) return this.checkUnusedAdminTokenFile();
    const bootstrap = bootstrapAdmin(this.config.dataDir, this.adminTokenFile, this.clock.nowMs(), this.warnSecretFile);
    if (bootstrap.generated) writeTokenFile(bootstrap.path, bootstrap.token);
    await this.committer.submit(bootstrap.request);
    this.logger.log('warn', 'no token existed: registered a bootstrap admin token', { file: bootstrap.path, generated: bootstrap.generated });
  }

  /**
   * `--admin-token-file` registers its token only on a root that holds no token at all. On any other start it is not
   * used, and an operator who put a new token in it (a rotated Secret) got 401 `unknown token` with nothing in the log
   * to say why (audit, 2026-12-06). The start goes on (the file is not needed), but says so when the file's token is
   * not one this root holds, or the file holds no token.
   */
  private checkUnusedAdminTokenFile(): void {
    const file = this.adminTokenFile;
    if (file === undefined) return;
    let why: string | undefined;
    try {
      this.tokens.authenticateToken(readTokenFile(file, '--admin-token-file', this.warnSecretFile));
    } catch (error) {
      why = (error as Error).message;
    }
    if (why !== undefined)
      this.logger.log(
        'warn',
        '--admin-token-file was not used: a root registers its token only when it holds no token at all, and this one holds some. To use a new admin token, create it with an admin token this root holds (mercury token create NAME --scope admin) and put that in the file',
        { file, why },
      );
  }

  /** How this node checks requests: `required` or `off`. */
  get authMode(): AuthMode {
    return this.guard.mode;
  }

  /** Calls `listener` after every batch of entries this node applies (embedding code and benchmarks). */
  onApplied(listener: (entries: readonly EncodedEntry[]) => void): void {
    this.appliedListeners.push(listener);
  }

  private rootHeartbeat(): Heartbeat {
    return this.heartbeats.next(this.store.head().seq, this.clock.nowMs());
  }

  /** Opens the data directory and starts serving HTTP. */
  static async start(config: NodeConfig, options: NodeOptions = {}): Promise<MercuryNode> {
    // The authentication mode is src/auth's: required unless the node's options say off.
    checkListenSecurity(config, options.auth ?? 'required');
    // Not a token: every upstream would refuse it, and one longer than HELLO's credential field would throw at the
    // first connection. Refused before the data directory is opened.
    if (options.replicationToken !== undefined && parseToken(options.replicationToken) === undefined)
      throw new MercuryError('CONFIG_INVALID', `replicationToken is not a token (${TOKEN_CHARS} characters, mcy_...; make one with mercury token create NAME --scope replicate)`);
    let node: MercuryNode;
    const opened: { store?: Store } = {};
    try {
      node = new MercuryNode(config, options, (store) => (opened.store = store));
    } catch (error) {
      // Failed after opening the store (a damaged token record, say): released, or the directory would stay open and
      // locked for the rest of the process, and a caller that repaired the cause could not open it again.
      await opened.store?.close();
      throw refusedAtStart(config.dataDir, error);
    }
    try {
      await new Promise<void>((resolve, reject) => {
        node.server.once('error', reject);
        node.server.listen(config.port, config.host, () => {
          node.server.off('error', reject);
          resolve();
        });
      }).catch((error: unknown) => {
        throw listenFailure(LISTENERS.http, config.host, config.port, error);
      });
      await node.replicationServer.listen(config.replicationHost, config.replicationPort).catch((error: unknown) => {
        throw listenFailure(LISTENERS.replication, config.replicationHost, config.replicationPort, error);
      });
      await node.wireServer.listen(config.wireHost, config.wirePort).catch((error: unknown) => {
        throw listenFailure(LISTENERS.wire, config.wireHost, config.wirePort, error);
      });
      // After listening, so a start that fails (a port in use) registers nothing; meanwhile no token exists, so
      // whatever arrives is refused with 401. The key rotation comes first: every entry after it is signed by the new
      // key, which replicas trust only from the rotation entry on. A bootstrap token registered before it was signed
      // by a key no entry had named yet (audit, 2026-12-06): replicas trusting the old key refused it for good, and a
      // first rotation was refused at start, the chain's last entry no longer signed by the old key.
      if (node.committer !== undefined) await node.recordRootKeys(node.signer);
      await node.bootstrapAdmin();
    } catch (error) {
      // Nothing is served (port in use, say): release the data directory, which would otherwise stay open (and
      // locked) for the rest of the process.
      node.server.close();
      await node.replicationServer.close();
      await node.wireServer.close();
      await node.committer?.close();
      await node.store.close();
      throw refusedAtStart(config.dataDir, error);
    }
    node.serving = true;
    node.armTrim(); // the log may be over its bounds from an earlier run
    node.armExpiry();
    node.tls?.watch();
    if (node.replicationClient === undefined) {
      node.heartbeatTimer = node.clock.setInterval(() => node.replicationServer.heartbeat(node.rootHeartbeat()), node.limits.replication.heartbeatIntervalMs);
    } else {
      if (config.resync || node.unverifiedUnderTrust()) node.replicationClient.resync();
      node.replicationClient.start();
    }
    if (node.generatedSigningKey !== undefined)
      node.logger.log('info', 'generated the root signing key; give its public half to replicas with --trust-key', {
        key: node.signer?.keyId,
        path: node.generatedSigningKey,
      });
    node.logger.log('info', 'node started', {
      role: node.role,
      url: node.url,
      advertisedUrl: node.advertisedUrl,
      replication: node.replicationAddress,
      wire: node.wireUrl,
      upstreams: config.upstreams,
      dataDir: config.dataDir,
      seq: node.store.head().seq,
      datasetId: node.store.datasetId,
      tls: node.tlsStatus(),
    });
    const validToMs = node.tls?.current().validToMs;
    if (validToMs !== undefined && validToMs < node.clock.nowMs())
      node.logger.log('error', 'this node\'s TLS certificate has expired: peers will refuse it; renew --tls-cert (it is reloaded without a restart)', { validTo: new Date(validToMs).toISOString() });
    return node;
  }

  /**
   * Root: records in signed entries what replicas with trusted keys learn from the chain: a key rotation (an entry
   * signed by the previous key naming the new one, src/trust/) and the root's URL for forwarded writes (`--root-url`).
   * Refuses to start with a key other than the one the chain names, unless rotating: replicas would refuse every entry.
   */
  private async recordRootKeys(signer: Signer | undefined): Promise<void> {
    if (signer !== undefined) await this.rotateIfAsked(signer);
    const url = this.config.rootUrl;
    if (url !== undefined && this.store.get(ROOT_URL_KEY).record?.value.toString('utf8') !== url)
      await this.committer!.submit({ compares: [], success: [{ type: 'put', key: ROOT_URL_KEY, value: Buffer.from(url, 'utf8') }], failure: [] }, true);
  }

  private async rotateIfAsked(signer: Signer): Promise<void> {
    const raw = rawPublicKey(signer.publicKey);
    const named = this.store.get(ROOT_KEY_KEY).record?.value;
    const namedKey = named === undefined ? undefined : publicKeyFromRaw(named);
    const namedId = namedKey === undefined ? '?' : keyId(namedKey);
    if (this.config.previousSigningKeyFile !== undefined && !(named?.equals(raw) ?? false)) {
      const previous = new Signer(readSigningKey(this.config.previousSigningKeyFile, '--previous-signing-key', this.warnSecretFile));
      if (named !== undefined && !named.equals(rawPublicKey(previous.publicKey)))
        throw new MercuryError('CONFIG_INVALID', `--previous-signing-key is key ${previous.keyId}, but the chain names key ${namedId} as the root's: rotate from that one`);
      const head = this.store.head();
      const headEntry = head.seq === 0 ? undefined : this.store.readLog(head.seq, 1)[0]?.entry;
      // No rotation yet: the key replicas trust is the one that signed the head. A rotation signed by another would be
      // refused by every replica, for good: it sits in the chain, and every entry after it is signed by the new key
      // (audit, 2026-12-06: a wrong --previous-signing-key was taken, and the replicas stopped at that entry).
      if (named === undefined && headEntry?.signature !== undefined && !verifies(previous.publicKey, entrySignedMessage(headEntry.hash), headEntry.signature))
        throw new MercuryError(
          'CONFIG_INVALID',
          `--previous-signing-key is key ${previous.keyId}, but the chain's last entry (seq ${head.seq}) is not signed by it, so replicas would refuse the rotation: give the key this root signed with until now (its data directory's signing-key.pem, or the --signing-key it was started with)`,
        );
      const headTimeMs = headEntry?.timeMs ?? 0;
      const committed = this.store.commit(
        Math.max(headTimeMs, this.clock.nowMs()),
        (view) => view.apply({ type: 'put', key: ROOT_KEY_KEY, value: raw }),
        (hash) => previous.signEntry(hash),
      );
      await this.store.flushed();
      if (committed !== undefined) this.applied([committed]);
      this.logger.log('warn', 'rotated the root signing key: replicas trust the new key from this entry on', { from: previous.keyId, to: signer.keyId, seq: committed?.entry.seq });
    } else if (named !== undefined && !named.equals(raw)) {
      throw new MercuryError(
        'CONFIG_INVALID',
        `this root's signing key is ${signer.keyId}, but the chain names key ${namedId}: replicas would refuse every entry. Start with that key, or rotate with --signing-key NEW --previous-signing-key OLD`,
      );
    }
  }

  get url(): string {
    const address = this.server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `${this.tls === undefined ? 'http' : 'https'}://${host}:${address.port}`;
  }

  /** The URL other nodes reach this one by (children forward writes there): `--advertise-url`, else the listen URL. */
  get advertisedUrl(): string {
    return this.config.advertiseUrl ?? this.url;
  }

  get role(): 'root' | 'replica' {
    return this.committer === undefined ? 'replica' : 'root';
  }

  /** The wire port's URL for clients: `mercury+tcp://host:port`, or `mercury+tls://` when the node has TLS. */
  get wireUrl(): string {
    return `${this.wireServer.secure ? 'mercury+tls' : 'mercury+tcp'}://${this.wireServer.address}`;
  }

  /** "host:port" where child replicas connect. */
  get replicationAddress(): string {
    return this.replicationServer.address;
  }

  /**
   * The Authorization a replica forwards a write with. A caller that proved itself to this node by its client
   * certificate alone (a principal, so auth is required, and no Authorization header or wire token) cannot prove it
   * upstream: this node's own certificate would stand in for it, and the root would check and record this node as the
   * writer. Refused instead, before anything is forwarded.
   */
  private forwardCaller(caller: WriteCaller | undefined): string | undefined {
    if (this.committer !== undefined || caller === undefined) return caller?.authorization;
    if (caller.author !== undefined && caller.authorization === undefined)
      throw new MercuryError(
        'CERTIFICATE_NOT_FORWARDED',
        `this replica cannot forward a write authenticated by a client certificate ("${caller.author}"): the root would not see who wrote it. Send the write to the root, or authenticate with a token (mercury --token, --token-file or MERCURY_TOKEN)`,
      );
    return caller.authorization;
  }

  /**
   * Root: commits. Replica: forwards to the upstream, then waits until this node has applied the write's seq; both end
   * when the caller is `gone` (its connection closed): nobody would read the answer. The forward holds a connection to
   * the upstream and one of the forwardedWritesMax, for up to FORWARD_TIMEOUT_MS after its client left (an audit,
   * 2026-12-06: 64 clients gone, 64 sockets to a silent upstream and every other write OVERLOADED for 30 s), and the wait one
   * of the node's parked reads (SEQ_WAITERS_MAX), for up to forwardedWriteWaitMs (60 of 60 still waiting 10 s after
   * their clients hung up, behind an upstream that answered a seq it never sent). The forward also ends when
   * replication drops its upstream as stale (record 86); the wait for the seq does not: it outlasts a failover.
   */
  async write(request: WriteRequest, authorization?: string, gone?: () => AbortSignal): Promise<WriteResult> {
    if (this.committer !== undefined) {
      const committed = await this.committer.submit(request);
      return { ...committed, hash: this.committedHashAt(committed.seq) };
    }
    // A replica that cannot write would not show the write (read-your-writes): the root would commit it, and its caller
    // wait forwardedWriteWaitMs for SEQ_WAIT_TIMEOUT (audit, 2026-12-07). Refused with the storage's code, not
    // forwarded, so that it promises nothing was done (docs/decisions.md, record 71).
    const unwritable = this.replicationClient!.storagePause() ?? this.writableFault();
    if (unwritable !== undefined)
      throw new MercuryError(
        unwritable.code,
        // The fault's own message says of the write that failed that it was not applied: this one was not even tried.
        `this replica cannot apply writes (${unwritable.message.replace(/^the write was not applied: /, '')}), so it would not show this one: the write was not forwarded nor applied; send it to the root or another replica, or free space on this replica's disk and retry`,
      );
    const target = this.forwardTarget();
    const silent = this.forwards.refusal(target, this.replicationClient!.status().upstreamSwitches);
    if (silent !== undefined) throw silent;
    // Each forwarded write holds a connection to the upstream until it answers: past the cap, refused before anything
    // leaves this node (src/limits.ts, FORWARDED_WRITES_MAX), so OVERLOADED keeps its promise that nothing was done.
    if (this.forwards.size >= this.limits.http.forwardedWritesMax)
      throw new MercuryError(
        'OVERLOADED',
        `this replica already has ${this.forwards.size} writes forwarded to its upstream and not yet answered (at most ${this.limits.http.forwardedWritesMax}); the write was not applied: retry shortly, or write to the root`,
      );
    // Made once: HTTP makes a signal and a listener on the answer for each call.
    const callerGone = gone?.();
    // The forward ends when the caller goes, or when replication finds its upstream silent (record 86); the wait for
    // its seq when the caller goes, or at a storage failure, which may come before the root's answer is back.
    const forward = this.forwards.begin(target);
    const waitEnds = new AbortController();
    let fault: MercuryError | undefined;
    const faulted = (met: MercuryError): void => {
      fault = met;
      waitEnds.abort(met);
    };
    const callerLeft = (): void => {
      forward.ends.abort(callerGone?.reason);
      waitEnds.abort(callerGone?.reason);
    };
    this.forwardWaits.add(faulted);
    callerGone?.addEventListener('abort', callerLeft, { once: true });
    if (callerGone?.aborted === true) callerLeft();
    try {
      let result: WriteResult;
      try {
        result = await forwardWrite(target, request, undefined, this.forwardTls, authorization, forward.ends.signal);
      } finally {
        this.forwards.done(forward);
      }
      try {
        await this.seqWaiter.wait(result.seq, this.limits.http.forwardedWriteWaitMs, waitEnds.signal);
      } catch (error) {
        // Committed at the root, so not the storage's code (it promises nothing was done): the write is there, and
        // this replica shows it once its storage takes writes again.
        if (fault !== undefined && error === fault)
          throw new MercuryError(
            'SEQ_WAIT_TIMEOUT',
            `the write was committed upstream at seq ${result.seq}, but this replica cannot apply it (${fault.message}): do not resend it; read it from the root, or here with minSeq=${result.seq} once space is freed on this replica's disk`,
            { cause: error, details: { seq: this.store.head().seq } },
          );
        // Committed at the root: a client told SHUTTING_DOWN would send it again (that code promises nothing was done).
        // Seeing it here is moot on a node that is stopping. Nor OVERLOADED (every minSeq waiter taken), which a client
        // resends too (audit, 2026-12-06), nor the waiter's own timeout, whose message says to retry: the write is done,
        // only this replica has not shown it yet.
        const code = error instanceof MercuryError ? error.code : undefined;
        if (code !== 'SHUTTING_DOWN' && code !== 'OVERLOADED' && code !== 'SEQ_WAIT_TIMEOUT') throw error;
        if (code === 'SHUTTING_DOWN') return this.forwardedResult(result);
        const why = code === 'OVERLOADED' ? 'it cannot wait for it now (every minSeq waiter is taken)' : `it has not applied it within ${this.limits.http.forwardedWriteWaitMs} ms`;
        throw new MercuryError(
          'SEQ_WAIT_TIMEOUT',
          `the write was committed upstream at seq ${result.seq}, but this replica is at seq ${this.store.head().seq} and ${why}: do not resend it; read it from the root, or here with minSeq=${result.seq}`,
          { cause: error, details: { seq: this.store.head().seq } },
        );
      }
      return this.forwardedResult(result);
    } finally {
      this.forwardWaits.delete(faulted);
      callerGone?.removeEventListener('abort', callerLeft);
    }
  }

  /** A forwarded write's result once this replica reached its seq (or stops), its own hash checked against the upstream's. */
  private forwardedResult(result: WriteResult): WriteResult {
    // Reaching the seq is not holding the write: a replica whose chain forked from the root's (the root restored from
    // an older backup, this replica forwarding with --root-url) is already past it with other entries, and would never
    // show it. The upstream's hash at that seq says which entry carries the write.
    const own = this.committedHashAt(result.seq);
    if (result.hash !== undefined && own !== undefined && !own.equals(result.hash))
      throw new MercuryError(
        'REPLICA_DIVERGED',
        `the write was committed upstream at seq ${result.seq}, but this replica's entry ${result.seq} is another (hash ${own.toString('hex')}, upstream ${result.hash.toString('hex')}): its chain diverged from the root's, so it will not show the write; read from the root, and resync this replica (mercury resync)`,
        { details: { seq: result.seq } },
      );
    return { ...result, hash: own ?? result.hash };
  }

  /**
   * The hash of the entry at `seq`, read after the write it carries committed: undefined when it cannot be read now
   * (LMDB's reader table full, with readers of other processes). Never that error: OVERLOADED promises that nothing was
   * done, and a client would send the committed write again (review G). Without it a replica skips its divergence check.
   */
  private committedHashAt(seq: number): Buffer | undefined {
    try {
      return this.store.hashAt(seq);
    } catch (error) {
      if (readersFull(error) === undefined) throw error;
      this.logger.log('warn', 'the hash of a committed write could not be read: no LMDB reader free', { seq });
      return undefined;
    }
  }

  /**
   * A replica that verifies signatures (--trust-key) on data it applied without them (it ran without --trust-key, or
   * restored a snapshot file): a relay may have planted anything in it, a signing key and a root URL included, so it
   * is replaced by a snapshot from the upstream whose signed head is verified, and meanwhile its key and URL are not
   * trusted. Also stops marking data as verified once a replica runs without the checks. Returns whether to resync.
   */
  private unverifiedUnderTrust(): boolean {
    if (this.trustKeys.length === 0) {
      this.store.markUnverified();
      return false;
    }
    if (this.store.verified || this.store.datasetId === '') return false;
    this.logger.log('warn', 'this replica holds data applied without signature checks: replacing it with a verified snapshot (--trust-key)', { seq: this.store.head().seq });
    return true;
  }

  /** The root URL a signed entry recorded, when every entry this replica holds was verified (record 38). */
  private trustedRootUrl(): string | undefined {
    return this.store.verified ? this.store.get(ROOT_URL_KEY).record?.value.toString('utf8') : undefined;
  }

  /**
   * Where a replica forwards writes: `--root-url` if given; with trusted keys, only the root URL a signed entry
   * recorded (never a URL an upstream merely claims: a relay could capture the writes); otherwise its upstream's.
   */
  private forwardTarget(): string | undefined {
    if (this.config.rootUrl !== undefined) return this.config.rootUrl;
    if (this.trustKeys.length === 0) return this.replicationClient!.status().upstreamHttpUrl;
    const recorded = this.trustedRootUrl();
    if (recorded === undefined)
      throw new MercuryError(
        'ROOT_UNKNOWN',
        'this replica verifies signatures (--trust-key) and forwards writes only to a root it trusts, but knows no root URL: start it with --root-url, or the root with --root-url so that it records one; or write to the root',
      );
    return recorded;
  }

  /** Replica: drop the chain and take a full snapshot from the upstream (after a divergence). */
  resync(): void {
    if (this.replicationClient === undefined) throw new MercuryError('NOT_A_REPLICA', 'this node is the root; only a replica can resync from an upstream');
    // One at a time: each resync makes the upstream stream a full snapshot, so repeats would multiply that work.
    const replication = this.replicationClient.status();
    if (replication.resyncPending)
      throw new MercuryError('RESYNC_IN_PROGRESS', 'a resync is already in progress; follow it with mercury status', {
        details: { phase: replication.phase, snapshot: replication.snapshot ?? null },
      });
    this.logger.log('warn', 'resync requested by the operator', { seq: this.store.head().seq });
    this.replicationClient.resync();
  }

  status(): Record<string, unknown> {
    const head = this.store.head();
    const sizes = this.store.dataSizes();
    return {
      role: this.role,
      version: MERCURY_VERSION,
      // What this build speaks and writes: a replica and its upstream must have one replication version (README,
      // Upgrading); `version` alone did not tell two builds apart.
      protocols: { replication: PROTOCOL_VERSION, wire: WIRE_PROTOCOL_VERSION, snapshot: SNAPSHOT_FORMAT_VERSION },
      auth: this.guard.mode,
      nodeId: this.store.nodeId,
      datasetId: this.store.datasetId,
      seq: head.seq,
      headHash: head.hash.toString('hex'),
      log: this.logStatus(),
      keys: sizes.keys,
      dataFileBytes: sizes.dataFileBytes,
      url: this.url,
      advertisedUrl: this.advertisedUrl,
      wireUrl: this.wireUrl,
      uptimeMs: Math.round(this.clock.monotonicMs() - this.startedMs),
      replication: this.replicationStatus(),
      storage: this.storageStatus(),
      tls: this.tlsStatus(),
      watch: this.watchHub.counts(),
      snapshotReaders: this.snapshotReadersStatus(),
      // Root only: write requests committed since start (a replica sees entries, each carrying one or more writes).
      writesCommitted: this.committer?.writesCommitted ?? null,
      trust: this.trustStatus(),
    };
  }

  /**
   * The budget of long-lived snapshot readers (docs/decisions.md record 44): in use, its size, who was turned away,
   * and LMDB's reader table it is a share of, in force and as configured (they differ when another process made it).
   */
  private snapshotReadersStatus(): Record<string, unknown> {
    const readers = this.store.snapshotReaders;
    return {
      inUse: readers.inUse,
      max: readers.readersMax,
      refused: readers.refused,
      watchesWaiting: this.watchHub.waitingSnapshots,
      lmdbReadersMax: this.store.lmdbReadersMax,
      lmdbReadersMaxConfigured: this.store.lmdbReadersMaxConfigured,
    };
  }

  private tlsStatus(): Record<string, unknown> {
    if (this.tls === undefined) return { enabled: false };
    const material = this.tls.current();
    return {
      enabled: true,
      subject: material.subject,
      validTo: new Date(material.validToMs).toISOString(),
      reloads: this.tls.reloads,
      reloadFailures: this.tls.reloadFailures,
      closedOnCaChange: this.tls.closedOnCaChange,
      closedOnPeerExpiry: this.tls.closedOnPeerExpiry,
    };
  }

  /** Signatures: the root's signing key, or what a replica trusts and what it refused. */
  private trustStatus(): Record<string, unknown> {
    if (this.replicationClient === undefined) return { signingKey: this.signer?.keyId ?? null, rootUrl: this.config.rootUrl ?? null };
    const trust = this.replicationClient.status().trust;
    if (trust === undefined) return { verifying: false, forwardTo: 'upstream' };
    return {
      verifying: true,
      configuredKeys: trust.configuredKeys,
      learnedKey: trust.learnedKey ?? null,
      refusals: trust.refusals,
      lastRefusal: trust.lastRefusal ?? null,
      heartbeatsIgnored: trust.heartbeatsIgnored,
      unsignedSnapshotsDeclined: trust.unsignedSnapshotsDeclined,
      // Whether all the data came through the checks: false until a replica that ran without them is resynced.
      dataVerified: this.store.verified,
      forwardTo: this.config.rootUrl ?? this.trustedRootUrl() ?? null,
    };
  }

  /**
   * The retained log's bounds and size; null when a damaged log key keeps them from being read. Status still answers
   * then: it is where an operator looks, and the damage is under `storage`, recorded by the read that met it.
   */
  private logStatus(): { firstSeq: number; lastSeq: number; entries: number; bytes: number } | null {
    try {
      const bounds = this.store.logBounds();
      return { firstSeq: bounds.firstSeq, lastSeq: bounds.lastSeq, entries: bounds.lastSeq - bounds.firstSeq + 1, bytes: bounds.bytes };
    } catch (error) {
      if (!isDataCorrupted(error)) throw error;
      return null;
    }
  }

  /** Faults met in this node's own storage (src/store/health.ts). */
  private storageStatus(): Record<string, unknown> {
    const damage = this.store.damage();
    const fault = this.store.writeFault();
    return {
      sound: damage.count === 0,
      damageMet: damage.count,
      damage: damage.reports,
      writable: fault === undefined,
      writeFault: fault === undefined ? null : { code: fault.code, message: fault.message },
    };
  }

  /**
   * The storage failure of the last write, if writes still fail. Without client writes nothing would find out that
   * space was freed, so this tries a small write itself, at most once per STORAGE_PROBE_INTERVAL_MS.
   */
  private writableFault(): MercuryError | undefined {
    const fault = this.store.writeFault();
    if (fault === undefined) return undefined;
    const nowMs = this.clock.monotonicMs();
    if (nowMs - this.lastStorageProbeMs < STORAGE_PROBE_INTERVAL_MS) return fault;
    this.lastStorageProbeMs = nowMs;
    return this.store.probeWritable() ? undefined : this.store.writeFault();
  }

  /**
   * Ready to take traffic: the store is sound, writes reach the storage, and, on a replica, it has joined its upstream (streams from it). Each
   * reason says what is wrong; a store that met damage stays unready until an operator acts (README, "Damaged data").
   */
  readiness(): { ready: boolean; reasons: string[] } {
    const damage = this.store.damage();
    const replication = this.replicationClient?.status();
    return readiness({
      damageCount: damage.count,
      firstDamage: damage.reports[0]?.what,
      writeFault: this.writableFault(),
      replicationPause: this.replicationClient?.storagePause(),
      replicationPhase: replication?.phase,
      lagMs: replication?.lagMs,
      lagMsMax: this.config.readyLagMsMax,
    });
  }

  private replicationStatus(): Record<string, unknown> {
    const children = this.replicationServer.children().map((child) => ({
      nodeId: child.childNodeId,
      httpUrl: child.childHttpUrl ?? null,
      principal: child.principal ?? null,
      remote: child.remote,
      phase: child.phase,
      sentSeq: child.sentSeq,
      ackedSeq: child.ackedSeq,
      unackedBytes: child.unackedBytes,
      snapshot: child.snapshot,
    }));
    const base = { listen: this.replicationAddress, children };
    if (this.replicationClient === undefined) return base;
    const status = this.replicationClient.status();
    const pause = this.replicationClient.storagePause();
    return {
      ...base,
      upstreams: this.config.upstreams,
      phase: status.phase,
      upstream: status.upstream === undefined ? null : { address: status.upstream, nodeId: status.upstreamNodeId, httpUrl: status.upstreamHttpUrl },
      ancestors: status.ancestors,
      lagEntries: status.lagEntries ?? null,
      lagMs: status.lagMs ?? null,
      lastHeartbeatRootSeq: status.lastHeartbeatRootSeq ?? null,
      entriesApplied: status.entriesApplied,
      snapshotsInstalled: status.snapshotsInstalled,
      resyncPending: status.resyncPending,
      upstreamSwitches: status.upstreamSwitches,
      consecutiveFailures: status.consecutiveFailures,
      lastFailure: status.lastFailure ?? null,
      storagePause: pause === undefined ? null : { code: pause.code, message: pause.message },
      divergedReason: status.divergedReason ?? null,
      divergedHead: status.divergedHead === undefined ? null : { seq: status.divergedHead.seq, hash: status.divergedHead.hash.toString('hex') },
      snapshot: status.snapshot ?? null,
    };
  }

  /**
   * Arms the trimmer's timer, once: at start and when entries are applied, and again after a trim while the head has
   * moved past what it trimmed (or the trim failed). An idle node has no trim timer to wake it (a fleet of idle replicas
   * pays for every wake-up).
   */
  private armTrim(): void {
    if (this.trimTimer !== undefined || this.closing) return;
    this.trimTimer = this.clock.setTimeout(() => {
      void this.trimLog().then(() => {
        this.trimTimer = undefined;
        if (this.store.head().seq !== this.trimmedAtSeq) this.armTrim();
      });
    }, this.limits.log.trimIntervalMs);
  }

  /** Trims the log in small transactions, yielding to the event loop between them so writers and readers go on. */
  private async trimLog(): Promise<void> {
    const seq = this.store.head().seq;
    // Nothing appended since a check that left the log within its bounds: nothing to trim.
    if (this.trimming || seq === this.trimmedAtSeq) return;
    this.trimming = true;
    try {
      const { retainEntries, retainBytes, trimBatchEntries } = this.limits.log;
      for (;;) {
        // A commit under way on the write thread holds the write lock: let it finish, then step in before the
        // committer's next turn (under steady reads and writes there is nearly always one).
        while (this.store.commitUnderWay()) await this.store.commitSettled();
        const removed = this.store.trimLog(retainEntries, retainBytes, trimBatchEntries);
        const correction = this.store.takeLogBytesCorrection();
        if (correction !== undefined)
          this.logger.log('warn', 'the log size record was too low: summed the log again and wrote the sum back (it is a cache of that sum)', { damage: correction, logBytes: this.store.logBounds().bytes });
        if (removed === 0) break;
        // Each step is one short write transaction; commits (or applies) go on between steps.
        await new Promise((resolve) => setImmediate(resolve));
      }
      this.trimmedAtSeq = seq;
    } catch (error) {
      this.logger.log('error', 'log trim failed', { error: String(error) });
    } finally {
      this.trimming = false;
    }
  }

  /** Stops accepting requests, finishes queued writes, and closes the data directory. */
  async close(): Promise<void> {
    this.closing = true;
    this.trimTimer?.cancel();
    this.expiryTimer?.cancel();
    this.heartbeatTimer?.cancel();
    this.tls?.close();
    this.replicationClient?.close();
    // Reads parked on minSeq (HTTP and wire) are answered SHUTTING_DOWN now, not cut off with their connections below.
    this.seqWaiter.close();
    await this.replicationServer.close();
    // Upgraded sockets keep server.close() from finishing: close the watches first (1001, clients resume elsewhere).
    await this.watchHub.close();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    while (this.trimming) await new Promise((resolve) => setTimeout(resolve, 5));
    // Before the committer closes: the writes its connections have in flight are answered, then GOAWAY.
    await this.wireServer.close();
    await this.committer?.close();
    this.server.closeAllConnections();
    await closed;
    await this.store.close();
    this.logger.log('info', 'node stopped', { seq: this.store.head().seq });
  }
}
