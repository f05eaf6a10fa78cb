/**
 * What the CLI shows people and scripts, in one place: human units (bytes, durations, counts), a progress bar with a
 * rate and an ETA for long work, and the one rule of `--json` (one JSON object per line on stdout, the same fields
 * for scripts that the human line shows).
 *
 * The progress bar goes to stderr, and only when stderr is a terminal: stdout stays clean for the result (or the
 * JSON), and a log file or a pipe gets no carriage returns. It redraws at most every PROGRESS_REDRAW_MS.
 *
 * Text that came from a node (key names, status fields, error messages) or from a file is anyone's who can write a
 * key: printed raw, an ESC sequence in it could clear the operator's screen, retitle the window or forge lines. So
 * everything the CLI prints passes `terminalSafe`, which shows control characters as `\u001b`-style escapes (valid in
 * JSON strings too, so --json output is unchanged in meaning), and keys and values are shown with `showBytes`. The
 * exception is `mercury get`, whose output is the value's bytes themselves (for `> file`).
 *
 * An answer that is not what Mercury answers (a proxy's login page, a wrong shape) is the world, not a bug: printers
 * check the fields they use and throw AnswerShapeError, which main prints as one line naming the command and URL.
 */
import { isUtf8 } from 'node:buffer';
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

/**
 * C0 controls but tab and newline, DEL, and the C1 controls (U+0080..U+009F: a terminal in 8-bit mode takes U+009B
 * for ESC [). JSON.stringify escapes C0 but leaves DEL and C1 as they are.
 */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must not reach the terminal raw
const TERMINAL_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** `text` with every control character but tab and newline written as `\uXXXX`, so a terminal shows it instead of obeying it. */
export function terminalSafe(text: string): string {
  return text.replace(TERMINAL_CONTROL, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * A key or value on one line: as it is when it is printable UTF-8 without spaces or quotes, else as a JSON string (with
 * C1 controls escaped too), bytes that are not UTF-8 as `base64:...`.
 */
export function showBytes(bytes: Buffer | null | undefined): string {
  if (bytes === undefined || bytes === null) return 'null';
  if (!isUtf8(bytes)) return `base64:${bytes.toString('base64')}`;
  const text = bytes.toString('utf8');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what must not reach the terminal raw
  return /^[^\u0000-\u0020"\u007f-\u009f]+$/.test(text) ? text : terminalSafe(JSON.stringify(text));
}

/**
 * An answer from a node that is not Mercury's JSON, or not of the shape the command expects: `detail` says what;
 * `command` and `url`, once main knows them, which command asked whom.
 */
export class AnswerShapeError extends Error {
  constructor(
    readonly detail: string,
    where?: { readonly command: string; readonly url: string },
    options?: ErrorOptions,
  ) {
    super(`${where === undefined ? 'the node' : `${where.command}: the node at ${where.url}`} answered something that is not Mercury's JSON: ${detail}`, options);
    this.name = 'AnswerShapeError';
  }
}

/** `value` as a JSON object, or AnswerShapeError naming `what`. */
export function answerObject(value: unknown, what: string): Record<string, unknown> {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  throw new AnswerShapeError(`${what}: ${value === null ? 'null' : Array.isArray(value) ? 'a list' : typeof value} where an object belongs`);
}

/** `value` as a list, or AnswerShapeError naming `what`. */
export function answerList(value: unknown, what: string): unknown[] {
  if (Array.isArray(value)) return value;
  throw new AnswerShapeError(`${what}: ${value === undefined ? 'nothing' : value === null ? 'null' : typeof value} where a list belongs`);
}

/** A field of an answer as text: a string as it is, '?' when absent, anything else as JSON (never a crash). */
export function fieldText(value: unknown): string {
  if (typeof value === 'string') return inLine(value);
  return JSON.stringify(value) ?? '?';
}

/**
 * A node's text placed inside a line, its line breaks written as `\n` and `\r`: `terminalSafe` leaves newlines alone
 * (output has many lines), so a node's field holding one printed a line of its choosing, such as `mercury: OK`
 * (audit, 2026-12-06).
 */
export function inLine(text: string): string {
  return text.replace(/[\r\n]/g, (char) => (char === '\n' ? '\\n' : '\\r'));
}

/** A time in ms since the epoch as ISO 8601, '?' for anything that is not one (a node's field is not trusted to be). */
export function formatTimeMs(timeMs: unknown): string {
  if (typeof timeMs !== 'number') return '?';
  const date = new Date(timeMs);
  return Number.isNaN(date.getTime()) ? '?' : date.toISOString();
}

/** The one output rule: with --json, `value` as one line of JSON; otherwise the human text. Both pass terminalSafe. */
export function printResult(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(`${terminalSafe(json ? JSON.stringify(value) : human())}\n`);
}
