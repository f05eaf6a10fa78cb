/**
 * A test-only preload that takes every file descriptor its process has left, and gives them back, on SIGUSR2
 * (`fdFillerEnv`): a node at its open-files limit (EMFILE on every open) on demand, which its own caps no longer let
 * clients bring about. It says "fd-filler: filled N" or "fd-filler: released N" on stderr once done.
 */
import { closeSync, openSync } from 'node:fs';

/** The environment that loads this preload into a child. */
export function fdFillerEnv(): NodeJS.ProcessEnv {
  return { MERCURY_TEST_FD_FILLER: '1', NODE_OPTIONS: `--import=${import.meta.url}` };
}

// The test runner imports this module too (fdFillerEnv): only a process started with the variable is patched.
if (process.env.MERCURY_TEST_FD_FILLER === '1') {
  const held: number[] = [];
  process.on('SIGUSR2', () => {
    if (held.length > 0) {
      const count = held.length;
      for (const fd of held.splice(0)) closeSync(fd);
      process.stderr.write(`fd-filler: released ${count}\n`);
      return;
    }
    for (;;) {
      try {
        held.push(openSync('/dev/null', 'r'));
      } catch {
        break;
      }
    }
    process.stderr.write(`fd-filler: filled ${held.length}\n`);
  });
}
