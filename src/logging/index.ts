/**
 * Structured logs: one JSON object per line on stderr (stdout stays free for CLI output), with a time, a level, a
 * message and fields. Tests pass a silent logger.
 */
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

export const silentLogger: Logger = { log() {}, child: () => silentLogger };
