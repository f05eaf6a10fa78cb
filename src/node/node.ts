/**
 * A Mercury node: one data directory (Store), the group committer, the log trimmer and the HTTP API, wired together.
 * This is the composition root; the pieces it wires know nothing of each other.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { systemClock, type Clock, type TimerHandle } from '../clock/index.js';
import { GroupCommitter, type WriteRequest, type WriteResult } from '../commit/index.js';
import type { NodeConfig } from '../config/index.js';
import { LOG_TRIM_BATCH_ENTRIES, LOG_TRIM_INTERVAL_MS } from '../limits.js';
import { silentLogger, type Logger } from '../logging/index.js';
import { Registry } from '../metrics/index.js';
import { createApiHandler, createHttpServer, type NodeApi } from '../server/index.js';
import { Store } from '../store/index.js';
import { SeqWaiter } from './seq-waiter.js';
import { WatchHub, type WatchLimits } from '../watch/index.js';

export interface NodeOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Overrides of the watch limits (tests shrink them; see src/watch/limits.ts). */
  readonly watchLimits?: Partial<WatchLimits>;
}

export const MERCURY_VERSION = '0.1.0';

export class MercuryNode {
  readonly config: NodeConfig;
  readonly store: Store;
  readonly metrics = new Registry();
  readonly committer: GroupCommitter;
  /** WebSocket watches on /v1/watch; fed every entry this node applies. */
  readonly watchHub: WatchHub;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly seqWaiter: SeqWaiter;
  private readonly server: Server;
  private readonly startedMs: number;
  private trimTimer: TimerHandle | undefined;
  private trimming = false;

  private constructor(config: NodeConfig, options: NodeOptions) {
    this.config = config;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
    this.startedMs = this.clock.nowMs();
    this.store = Store.open({ path: config.dataDir });
    this.seqWaiter = new SeqWaiter(this.clock, () => this.store.head().seq);
    this.committer = new GroupCommitter({
      store: this.store,
      clock: this.clock,
      metrics: this.metrics,
      valueBytesMax: config.valueBytesMax,
    });
    this.committer.onCommitted(() => this.seqWaiter.notify());
    this.metrics.gauge('mercury_applied_seq', 'Seq of the last entry applied on this node.', () => this.store.head().seq);
    const api: NodeApi = {
      store: this.store,
      clock: this.clock,
      metrics: this.metrics,
      valueBytesMax: config.valueBytesMax,
      write: (request) => this.write(request),
      waitForSeq: (seq, timeoutMs) => this.seqWaiter.wait(seq, timeoutMs),
      status: () => this.status(),
      log: (message, fields) => this.logger.log('error', message, fields),
    };
    this.server = createHttpServer(createApiHandler(api));
    this.watchHub = new WatchHub({ store: this.store, clock: this.clock, metrics: this.metrics, logger: this.logger, limits: options.watchLimits });
    this.watchHub.attach(this.server);
    this.committer.onCommitted((committed) => this.watchHub.publish([committed]));
  }

  /** Opens the data directory and starts serving HTTP. */
  static async start(config: NodeConfig, options: NodeOptions = {}): Promise<MercuryNode> {
    const node = new MercuryNode(config, options);
    try {
      await new Promise<void>((resolve, reject) => {
        node.server.once('error', reject);
        node.server.listen(config.port, config.host, () => {
          node.server.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      // Nothing is served (port in use, say): release the data directory and the writer thread, which would
      // otherwise keep the directory open and the process alive.
      await node.committer.close();
      await node.store.close();
      throw error;
    }
    node.trimTimer = node.clock.setInterval(() => void node.trimLog(), LOG_TRIM_INTERVAL_MS);
    node.logger.log('info', 'node started', { url: node.url, dataDir: config.dataDir, seq: node.store.head().seq, datasetId: node.store.datasetId });
    return node;
  }

  get url(): string {
    const address = this.server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `http://${host}:${address.port}`;
  }

  write(request: WriteRequest): Promise<WriteResult> {
    return this.committer.submit(request);
  }

  status(): Record<string, unknown> {
    const head = this.store.head();
    const sizes = this.store.sizes();
    const bounds = this.store.logBounds();
    return {
      role: 'root',
      version: MERCURY_VERSION,
      nodeId: this.store.nodeId,
      datasetId: this.store.datasetId,
      seq: head.seq,
      headHash: head.hash.toString('hex'),
      log: { firstSeq: bounds.firstSeq, lastSeq: bounds.lastSeq, entries: sizes.logEntries, bytes: sizes.logBytes },
      keys: sizes.keys,
      dataFileBytes: sizes.dataFileBytes,
      url: this.url,
      uptimeMs: this.clock.nowMs() - this.startedMs,
    };
  }

  /** Trims the log in small transactions, yielding to the event loop between them so writers and readers go on. */
  private async trimLog(): Promise<void> {
    if (this.trimming) return;
    this.trimming = true;
    try {
      while ((await this.committer.trimLog(this.config.logRetainEntries, this.config.logRetainBytes, LOG_TRIM_BATCH_ENTRIES)) > 0) {
        // Each step is one short transaction on the writer thread; commits queue between steps.
      }
    } catch (error) {
      this.logger.log('error', 'log trim failed', { error: String(error) });
    } finally {
      this.trimming = false;
    }
  }

  /** Stops accepting requests, finishes queued writes, and closes the data directory. */
  async close(): Promise<void> {
    this.trimTimer?.cancel();
    // Upgraded sockets keep server.close() from finishing: close the watches first (1001, clients resume elsewhere).
    await this.watchHub.close();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    while (this.trimming) await new Promise((resolve) => setTimeout(resolve, 5));
    await this.committer.close();
    this.server.closeAllConnections();
    await closed;
    await this.store.close();
    this.logger.log('info', 'node stopped', { seq: this.store.head().seq });
  }
}
