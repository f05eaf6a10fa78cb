/**
 * The system's refusal to open another file: the process at its open-files limit (EMFILE) or the system at its own
 * (ENFILE). Not a fault of the file asked for: whoever meets it may try the same file again once descriptors are free.
 */

/** Whether `error`, or an error it was caused by, is EMFILE or ENFILE. */
export function isOutOfFiles(error: unknown): boolean {
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') return true;
  }
  return false;
}
