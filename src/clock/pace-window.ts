/**
 * Windows of a transfer that must keep a pace floor: `judge` (called as bytes are taken) ends the current window once
 * it is `windowMs` long, answering what was taken in it and how long it lasted, and starts the next one. Used by the
 * floors on what holds an LMDB read transaction while a peer takes it: an HTTP snapshot (src/server/http-io.ts,
 * SEND_TOO_SLOW) and a snapshot sent to a child replica (src/replication/upstream.ts, CHILD_TOO_SLOW). Times are the
 * caller's monotonic milliseconds.
 */
export class PaceWindow {
  private sinceMs: number;
  private sinceBytes: number;

  constructor(
    private readonly windowMs: number,
    nowMs: number,
    takenBytes: number,
  ) {
    this.sinceMs = nowMs;
    this.sinceBytes = takenBytes;
  }

  /** When the current window is due to be judged. */
  get endsAtMs(): number {
    return this.sinceMs + this.windowMs;
  }

  /** `takenBytes`: all taken so far. Undefined while the window lasts; else its figures, and the next one begins. */
  judge(nowMs: number, takenBytes: number): { takenBytes: number; elapsedMs: number } | undefined {
    const elapsedMs = nowMs - this.sinceMs;
    if (elapsedMs < this.windowMs) return undefined;
    const judged = { takenBytes: takenBytes - this.sinceBytes, elapsedMs: Math.round(elapsedMs) };
    this.sinceMs = nowMs;
    this.sinceBytes = takenBytes;
    return judged;
  }
}
