/**
 * Command lines of the benchmark scripts: each is checked before anything starts, so that a typo is one line naming
 * the option (exit code 2), not a NaN that surfaces minutes later or a stack trace; `--help` prints the script's own
 * description, the comment at the top of its file, which is where every script documents its options.
 */
import { readFileSync } from 'node:fs';

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

/** `text` as a number within [min, max], or a UsageError naming `--name`. */
export function numberWithin(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < min || value > max) throw new UsageError(`--${name} must be a number within ${min}..${max}, got "${text}"`);
  return value;
}

/** node:util parseArgs's errors for an unknown option, a missing value, a stray positional. */
function isParseArgsError(error: unknown): error is Error {
  const code = error instanceof Error ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}

/** The comment that opens the running script's file (its description and options), without its comment marks. */
function scriptDescription(): string {
  const path = process.argv[1];
  const text = path === undefined ? '' : readFileSync(path, 'utf8');
  const comment = /^\/\*\*([\s\S]*?)\*\//.exec(text)?.[1];
  if (comment === undefined) return 'this script documents no options\n';
  return `${comment
    .split('\n')
    .map((line) => line.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim()}\n`;
}

/**
 * Runs `read` (a script's parseArgs and option checks). `--help` or `-h` prints the script's description and exits
 * 0 first; a UsageError or an error of parseArgs (an unknown option, say) becomes one line on stderr and exit code 2.
 */
export function readOptions<T>(script: string, read: () => T): T {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(scriptDescription());
    process.exit(0);
  }
  try {
    return read();
  } catch (error) {
    if (!(error instanceof UsageError) && !isParseArgsError(error)) throw error;
    process.stderr.write(`${script}: ${error.message} (--help describes the options)\n`);
    process.exit(2);
  }
}
