/**
 * Command-line numbers for the benchmark scripts: each is checked before anything starts, so that a typo is a
 * message naming the option, not a NaN that surfaces minutes later.
 */

/** A benchmark's command line is wrong; the script prints the message (and its usage, where it has one). */
export class UsageError extends Error {
  readonly code = 'USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** `text` as a whole number within 1..max, or a UsageError naming `--name`. */
export function positiveInteger(name: string, text: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`--${name} must be a whole number, got "${text}"`);
  const value = Number(text);
  if (value < 1 || value > max) throw new UsageError(`--${name} must be within 1..${max}, got ${value}`);
  return value;
}

/** Runs `read` (a script's option checks); a UsageError becomes one line on stderr and exit code 2, not a stack. */
export function readOptions<T>(script: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${script}: ${error.message}\n`);
    process.exit(2);
  }
}
