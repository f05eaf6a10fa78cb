/**
 * Structured logs: one JSON object per line on stderr (stdout stays free for CLI output), with a time, a level, a
 * message and fields. Tests pass a silent logger.
 */
import { systemClock } from '../clock/index.js';
// The module itself, not src/net/index.js: it imports nothing of the project's, so logging stays below net.
import { hostSlotKey } from '../net/address-slots.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function jsonLogger(write: (line: string) => void = (line) => process.stderr.write(line), base: Record<string, unknown> = {}): Logger {
  return {
    log(level, message, fields) {
      write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...base, ...fields })}\n`);
    },
    child(fields) {
      return jsonLogger(write, { ...base, ...fields });
    },
  };
}

/**
 * Bytes of log lines the process holds for stderr beyond what the kernel took. Node writes stderr asynchronously when
 * it is a pipe, and keeps every line the pipe did not take: a `mercury serve` whose parent stopped reading its stderr
 * (a hung supervisor, a shell pipeline stopped with Ctrl-Z) held each line it logged, for good (a probe writing 100,000
 * lines of 200 bytes to such a pipe held 20 MB; a node refusing connections logs some 2 KB a second within its budget,
 * 170 MB a day). Past this, a line is lost and counted, as one a full disk refuses. 1 MiB is some 4,000 lines: a reader
 * that pauses for a moment misses none.
 */
export const LOG_BUFFERED_BYTES_MAX = 1024 * 1024;

/**
 * Lines for stderr, counting those it refuses: a log file on a full disk, a closed pipe, a pipe nobody reads once
 * `LOG_BUFFERED_BYTES_MAX` wait in the process. Such a line is lost, not retried (a node goes on without its log rather
 * than stopping or holding lines in memory); `lost` is what /metrics shows as `mercury_log_lines_lost_total`. Each
 * write's callback says whether that line was written, also for a stream that an error destroyed, where no further
 * error event comes.
 */
export class StderrLines {
  lost = 0;
  private readonly written = (error?: Error | null): void => {
    if (error) this.lost++;
  };
  readonly write = (line: string): void => {
    if (process.stderr.writableLength >= LOG_BUFFERED_BYTES_MAX) {
      this.lost++;
      return;
    }
    process.stderr.write(line, this.written);
  };
}

export const silentLogger: Logger = { log() {}, child: () => silentLogger };

/**
 * How many lines of one message a window lets through, how many of those may name one peer (the `remote` field, its
 * port aside), the window, and how many messages are tracked at once.
 */
export interface LogBudget {
  readonly linesPerWindow: number;
  readonly linesPerPeerPerWindow: number;
  readonly windowMs: number;
  readonly messagesMax: number;
}

/**
 * 100 lines of one message per 10 s: a node logs a line for each connection it refuses ("refused child", "TLS
 * connection refused"), before anyone is authenticated, so without a budget whoever reaches a port decides how fast
 * its disk fills (an audit wrote 240 lines in 3 s with 120 connections of junk).
 */
export const LOG_BUDGET_DEFAULT: LogBudget = { linesPerWindow: 100, linesPerPeerPerWindow: 10, windowMs: 10_000, messagesMax: 1_000 };

/** The message under which lines of messages past `messagesMax` share one budget. */
const OTHER_MESSAGES = 'other messages';

interface Window {
  startMs: number;
  lines: number;
  suppressed: number;
  level: LogLevel;
  /** Lines let through this window per peer; at most `linesPerWindow` entries, since only admitted lines add one. */
  readonly peers: Map<string, number>;
}

/**
 * The peer a line names: its `remote` field without the port, keyed as the per-address connection caps count a host
 * (hostSlotKey: "10.0.0.7:50412" is 10.0.0.7, "[2001:db8::7]:50412" its /64, which one host may fill with source
 * addresses), or undefined for a line that names none.
 */
function peerOf(fields: Record<string, unknown> | undefined): string | undefined {
  const remote = fields?.remote;
  if (typeof remote !== 'string') return undefined;
  return hostSlotKey(/^\[(.*)\]:\d+$/.exec(remote)?.[1] ?? /^([^:]*):\d+$/.exec(remote)?.[1] ?? remote);
}

/**
 * A logger that lets through at most `linesPerWindow` lines of each message per window, and says how many it held
 * back: the first line of a message in a later window is preceded by `{"message": "log lines suppressed", "of":
 * MESSAGE, "suppressed": K}` at the level of the lines held back. A message held back and never logged again is
 * not reported. Within a message, one peer (the `remote` field) gets at most `linesPerPeerPerWindow` of its lines:
 * one address that floods a port cannot use the whole budget and hide the refusals of others (peers with many
 * addresses still can; the count of suppressed lines says that it happened). Windows are on the monotonic clock: on
 * the wall clock (Date.now, until an audit of 2026-12-06), a step back of an hour silenced a message past its first
 * lines for that hour, the CLOCK_STEPPED warning and upstream failures included.
 */
export function budgetedLogger(inner: Logger, budget: LogBudget = LOG_BUDGET_DEFAULT, nowMs: () => number = () => systemClock.monotonicMs()): Logger {
  const windows = new Map<string, Window>();
  const admit = (level: LogLevel, message: string, fields: Record<string, unknown> | undefined): boolean => {
    const now = nowMs();
    let key = message;
    if (!windows.has(key) && windows.size >= budget.messagesMax) {
      for (const [known, window] of windows) if (now - window.startMs >= budget.windowMs && window.suppressed === 0) windows.delete(known);
      if (windows.size >= budget.messagesMax) key = OTHER_MESSAGES;
    }
    let window = windows.get(key);
    if (window === undefined) windows.set(key, (window = { startMs: now, lines: 0, suppressed: 0, level, peers: new Map() }));
    // A time before the window's start (a clock that stepped back) turns it too: else it would hold the message back
    // for as long as the step.
    if (now - window.startMs >= budget.windowMs || now < window.startMs) {
      if (window.suppressed > 0) inner.log(window.level, 'log lines suppressed', { of: key, suppressed: window.suppressed, windowMs: budget.windowMs });
      window.startMs = now;
      window.lines = 0;
      window.suppressed = 0;
      window.peers.clear();
    }
    const peer = peerOf(fields);
    const peerLines = peer === undefined ? 0 : (window.peers.get(peer) ?? 0);
    if (window.lines < budget.linesPerWindow && peerLines < budget.linesPerPeerPerWindow) {
      window.lines++;
      if (peer !== undefined) window.peers.set(peer, peerLines + 1);
      return true;
    }
    window.suppressed++;
    window.level = level;
    return false;
  };
  const wrap = (logger: Logger): Logger => ({
    log(level, message, fields) {
      if (admit(level, message, fields)) logger.log(level, message, fields);
    },
    child: (fields) => wrap(logger.child(fields)),
  });
  return wrap(inner);
}
