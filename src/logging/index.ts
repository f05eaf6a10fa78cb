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

/** How many lines of one message a window lets through, the window, and how many messages are tracked at once. */
export interface LogBudget {
  readonly linesPerWindow: number;
  readonly windowMs: number;
  readonly messagesMax: number;
}

/**
 * 100 lines of one message per 10 s: a node logs a line for each connection it refuses ("refused child", "TLS
 * connection refused"), before anyone is authenticated, so without a budget whoever reaches a port decides how fast
 * its disk fills (an audit wrote 240 lines in 3 s with 120 connections of junk).
 */
export const LOG_BUDGET_DEFAULT: LogBudget = { linesPerWindow: 100, windowMs: 10_000, messagesMax: 1_000 };

/** The message under which lines of messages past `messagesMax` share one budget. */
const OTHER_MESSAGES = 'other messages';

interface Window {
  startMs: number;
  lines: number;
  suppressed: number;
  level: LogLevel;
}

/**
 * A logger that lets through at most `linesPerWindow` lines of each message per window, and says how many it held
 * back: the first line of a message in a later window is preceded by `{"message": "log lines suppressed", "of":
 * MESSAGE, "suppressed": K}` at the level of the lines held back. A message held back and never logged again is
 * not reported. Fields do not count: the budget is the message's, whoever's connection it names.
 */
export function budgetedLogger(inner: Logger, budget: LogBudget = LOG_BUDGET_DEFAULT, nowMs: () => number = Date.now): Logger {
  const windows = new Map<string, Window>();
  const admit = (level: LogLevel, message: string): boolean => {
    const now = nowMs();
    let key = message;
    if (!windows.has(key) && windows.size >= budget.messagesMax) {
      for (const [known, window] of windows) if (now - window.startMs >= budget.windowMs && window.suppressed === 0) windows.delete(known);
      if (windows.size >= budget.messagesMax) key = OTHER_MESSAGES;
    }
    let window = windows.get(key);
    if (window === undefined) windows.set(key, (window = { startMs: now, lines: 0, suppressed: 0, level }));
    if (now - window.startMs >= budget.windowMs) {
      if (window.suppressed > 0) inner.log(window.level, 'log lines suppressed', { of: key, suppressed: window.suppressed, windowMs: budget.windowMs });
      window.startMs = now;
      window.lines = 0;
      window.suppressed = 0;
    }
    if (window.lines < budget.linesPerWindow) {
      window.lines++;
      return true;
    }
    window.suppressed++;
    window.level = level;
    return false;
  };
  const wrap = (logger: Logger): Logger => ({
    log(level, message, fields) {
      if (admit(level, message)) logger.log(level, message, fields);
    },
    child: (fields) => wrap(logger.child(fields)),
  });
  return wrap(inner);
}
