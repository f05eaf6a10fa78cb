/**
 * The pace a snapshot transfer must keep (`mercury snapshot save`, and the entries `snapshot restore --to-seq` replays). The client's stream bounds silence only (120 s
 * between bytes, STREAM_IDLE_TIMEOUT_MS), so a node that sent a byte every 100 s held the command for ever: about 19
 * days for its 16 KiB of headers alone (audit, 2026-12-06). Here, per request, the answer's status line, headers and
 * the snapshot's header must arrive whole within `headerMs`; after it, each window of `windowMs` must bring at least
 * `windowBytesMin` bytes. Otherwise the request is aborted and the save fails with SNAPSHOT_STALLED.
 */
import { MercuryError } from '../errors/index.js';
import { formatBytes, formatDuration } from './output.js';

const MiB = 1024 * 1024;

export interface TransferPace {
  /** From a request to the snapshot header received whole. */
  readonly headerMs: number;
  /** After the header: each window this long ... */
  readonly windowMs: number;
  /** ... must bring at least this many bytes. */
  readonly windowBytesMin: number;
}

/**
 * Never met by a real node on a real link: the node answers once it has summed the snapshot's size, which the client's
 * 120 s bound on silence already limits, and then sends its headers and the snapshot header (a few hundred bytes)
 * together, so 5 minutes leave 3 for bytes that take a millisecond. 1 MiB per 10 minutes is 1.7 KB/s on average, below
 * a 14.4 kbit/s modem: a congested link of 100 kbit/s moves 7 MB in that window, and a node pausing on a slow disk is
 * cut at 120 s of silence anyway, leaving it 8 minutes of the window. What a hostile node can still do: keep the save
 * going at that rate, at most the header time plus 10 minutes per MiB of the size its header announced (which must
 * fit the disk).
 */
export const SAVE_PACE: TransferPace = { headerMs: 5 * 60_000, windowMs: 10 * 60_000, windowBytesMin: 1 * MiB };

/**
 * Watches one transfer against a TransferPace; `signal` is aborted, with `tripped` as its reason, when it falls behind.
 * `stalled(why)` makes the error (`why` a phrase: what the node did). Call `stop` when the transfer ends either way.
 */
export class PaceGuard {
  private readonly controller = new AbortController();
  readonly signal: AbortSignal = this.controller.signal;
  private tripped: MercuryError | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Bytes since the request, and since the current window began. */
  private receivedBytes = 0;
  private windowBytes = 0;

  /** `header`: what must arrive within `headerMs` (the snapshot header; an entry stream has none beyond its HTTP headers). */
  constructor(
    private readonly pace: TransferPace,
    private readonly stalled: (why: string) => MercuryError,
    private readonly header = 'the snapshot header',
  ) {}

  /** A request goes out (each attempt of a busy wait): its snapshot header is due within `headerMs`. */
  requested(): void {
    this.receivedBytes = 0;
    const { headerMs } = this.pace;
    this.arm(headerMs, () => this.trip(`did not send ${this.header} within ${formatDuration(headerMs)} of the request (${formatBytes(this.receivedBytes)} of the answer received)`));
  }

  private received(bytes: number): void {
    this.receivedBytes += bytes;
    this.windowBytes += bytes;
  }

  /** The snapshot header is whole: from now on, windows. */
  headerReceived(): void {
    this.windowBytes = 0;
    const { windowMs, windowBytesMin } = this.pace;
    this.arm(windowMs, () => {
      if (this.windowBytes >= windowBytesMin) return this.headerReceived();
      this.trip(
        `sent ${formatBytes(this.windowBytes)} in the last ${formatDuration(windowMs)}, below the ${formatBytes(windowBytesMin)} per ${formatDuration(windowMs)} the slowest real link carries (${formatBytes(this.receivedBytes)} received)`,
      );
    });
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /**
   * `chunks` as they come, each counted; the guard stops when they end, or when the caller stops reading. A stream cut
   * because the guard tripped fails with the guard's error, not the cut's ("aborted").
   */
  async *paced(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of chunks) {
        this.received(chunk.length);
        yield chunk;
      }
    } catch (error) {
      throw this.tripped ?? error;
    } finally {
      this.stop();
    }
  }

  private arm(ms: number, due: () => void): void {
    clearTimeout(this.timer);
    // Never what keeps the process alive: a transfer holds its socket, and a guard left armed must not hold the CLI.
    this.timer = setTimeout(due, ms).unref();
  }

  private trip(why: string): void {
    this.tripped = this.stalled(why);
    this.controller.abort(this.tripped);
  }
}
