/**
 * What the CLI shows people and scripts, in one place: human units (bytes, durations, counts), a progress bar with a
 * rate and an ETA for long work, and the one rule of `--json` (one JSON object per line on stdout, the same fields
 * for scripts that the human line shows).
 *
 * The progress bar goes to stderr, and only when stderr is a terminal: stdout stays clean for the result (or the
 * JSON), and a log file or a pipe gets no carriage returns. It redraws at most every PROGRESS_REDRAW_MS.
 */
import { systemClock, type Clock } from '../clock/index.js';

const KiB = 1024;
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
const BAR_CHARS = 30;
/** Often enough to look alive, rarely enough that drawing costs nothing next to the work. */
const PROGRESS_REDRAW_MS = 100;

/** 512 B, 1.5 KiB, 23.4 MiB, 1.02 GiB: three significant digits, binary units (as `ls -h` and `du -h`). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return `${bytes} B`;
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= KiB && unit < UNITS.length - 1) {
    value /= KiB;
    unit++;
  }
  if (unit === 0) return `${value} B`;
  return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ${UNITS[unit]}`;
}

/** 850 ms, 12.3 s, 4m05s, 2h03m, 3d04h. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1_000);
  const pad = (n: number): string => String(n).padStart(2, '0');
  if (seconds < 3_600) return `${Math.floor(seconds / 60)}m${pad(seconds % 60)}s`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3_600)}h${pad(Math.floor((seconds % 3_600) / 60))}m`;
  return `${Math.floor(seconds / 86_400)}d${pad(Math.floor((seconds % 86_400) / 3_600))}h`;
}

/** 1,234,567. */
export function formatCount(count: number): string {
  return count.toLocaleString('en-US');
}

export type ProgressUnit = 'bytes' | 'items';

export interface ProgressState {
  readonly label: string;
  readonly done: number;
  /** Undefined when the total is unknown: no bar, no ETA, just the count and rate. */
  readonly total: number | undefined;
  readonly unit: ProgressUnit;
  readonly elapsedMs: number;
}

function amount(value: number, unit: ProgressUnit): string {
  return unit === 'bytes' ? formatBytes(value) : formatCount(value);
}

/** One line: `save [#########.....] 45% 1.20 GiB/2.67 GiB 85.3 MiB/s ETA 17.6 s`. */
export function renderProgress(state: ProgressState): string {
  const seconds = state.elapsedMs / 1_000;
  const rate = seconds > 0 ? state.done / seconds : 0;
  const rateText = rate > 0 ? ` ${amount(rate, state.unit)}/s` : '';
  if (state.total === undefined) return `${state.label} ${amount(state.done, state.unit)}${rateText}`;
  const fraction = state.total === 0 ? 1 : Math.min(1, state.done / state.total);
  const filled = Math.round(fraction * BAR_CHARS);
  const remaining = Math.max(0, state.total - state.done);
  const eta = remaining === 0 ? 'done' : rate > 0 ? `ETA ${formatDuration((remaining / rate) * 1_000)}` : 'ETA ?';
  return `${state.label} [${'#'.repeat(filled)}${'.'.repeat(BAR_CHARS - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${amount(state.done, state.unit)}/${amount(state.total, state.unit)}${rateText} ${eta}`;
}

interface ProgressStream {
  readonly isTTY?: boolean;
  write(text: string): unknown;
}

/** A progress bar on a terminal, nothing elsewhere. Call `update` as often as you like, `finish` once. */
export class ProgressBar {
  private readonly startedMs: number;
  private lastDrawMs = -Infinity;
  private lastWidth = 0;
  private done = 0;
  private drawn = false;
  private readonly enabled: boolean;

  constructor(
    private readonly label: string,
    private total: number | undefined,
    private readonly unit: ProgressUnit,
    private readonly stream: ProgressStream = process.stderr,
    private readonly clock: Clock = systemClock,
  ) {
    this.enabled = stream.isTTY === true;
    this.startedMs = clock.monotonicMs();
  }

  /** Milliseconds since the bar was made (for the summary line). */
  elapsedMs(): number {
    return this.clock.monotonicMs() - this.startedMs;
  }

  setTotal(total: number | undefined): void {
    this.total = total;
  }

  update(done: number): void {
    this.done = done;
    if (!this.enabled) return;
    const now = this.clock.monotonicMs();
    if (now - this.lastDrawMs < PROGRESS_REDRAW_MS) return;
    this.draw(now);
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    if (!this.enabled) return;
    this.draw(this.clock.monotonicMs());
    this.stream.write('\n');
  }

  /** Clears the line (before an error message). */
  abandon(): void {
    if (!this.enabled || !this.drawn) return;
    this.stream.write(`\r${' '.repeat(this.lastWidth)}\r`);
  }

  private draw(now: number): void {
    this.lastDrawMs = now;
    this.drawn = true;
    const line = renderProgress({ label: this.label, done: this.done, total: this.total, unit: this.unit, elapsedMs: now - this.startedMs });
    // Pad over the previous line, which may have been longer.
    this.stream.write(`\r${line.padEnd(this.lastWidth)}`);
    this.lastWidth = line.length;
  }
}

/** The one output rule: with --json, `value` as one line of JSON; otherwise the human text. */
export function printResult(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(value) : human()}\n`);
}
