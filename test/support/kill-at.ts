/**
 * A test-only preload that kills its process with SIGKILL at an exact moment of `mercury snapshot restore`, named by
 * MERCURY_TEST_KILL_AT: no crash hook is compiled into Mercury, this patches `node:fs` in the one process it is loaded
 * into (`killAtEnv`). The moments:
 * - `restore-moved`: every file of the new store renamed into DIR, `restore.partial` not yet removed (the kill falls
 *   on the removal of a partial directory that no longer holds a data.mdb, DIR holding one);
 * - `restore-moving`: right after data.mdb was renamed out of `restore.partial`, the first of the store's files, before
 *   the next;
 * - `restore-emptied`: the directory that held the new store being removed once every file was moved in, emptied
 *   (its record `moving-in` unlinked) but not yet removed: the kill falls between the two, which a recursive removal
 *   makes one after the other.
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { basename, dirname, join } from 'node:path';

export type KillMoment = 'restore-moved' | 'restore-moving' | 'restore-emptied';

/** The environment that loads this preload into a child, to be killed at `moment`. */
export function killAtEnv(moment: KillMoment): NodeJS.ProcessEnv {
  return { MERCURY_TEST_KILL_AT: moment, NODE_OPTIONS: `--import=${import.meta.url}` };
}

const PARTIAL = 'restore.partial';
const moment = process.env.MERCURY_TEST_KILL_AT;
// The test runner imports this module too (killAtEnv): only a process started with the variable is patched.
if (moment !== undefined) {
  const kill = (): never => {
    process.kill(process.pid, 'SIGKILL');
    throw new Error('unreachable: killed');
  };
  /** A directory in DIR that held the new store, once all of it was moved into DIR. */
  const movedOut = (text: string): boolean => fs.existsSync(text) && !fs.existsSync(join(text, 'data.mdb')) && fs.existsSync(join(dirname(text), 'data.mdb'));
  if (moment === 'restore-moved') {
    // Before the partial directory is removed, or renamed away to be removed.
    const rmSync = fs.rmSync;
    fs.rmSync = (path, options) => {
      const text = String(path);
      if (basename(text) === PARTIAL && movedOut(text)) kill();
      rmSync(path, options);
    };
    const renameSync = fs.renameSync;
    fs.renameSync = (from, to) => {
      const text = String(from);
      if (basename(text) === PARTIAL && movedOut(text)) kill();
      renameSync(from, to);
    };
  } else if (moment === 'restore-emptied') {
    const rmSync = fs.rmSync;
    fs.rmSync = (path, options) => {
      const text = String(path);
      const record = join(text, 'moving-in');
      if (movedOut(text) && fs.existsSync(record)) {
        fs.unlinkSync(record);
        kill();
      }
      rmSync(path, options);
    };
  } else if (moment === 'restore-moving') {
    const renameSync = fs.renameSync;
    fs.renameSync = (from, to) => {
      renameSync(from, to);
      if (basename(dirname(String(from))) === PARTIAL && basename(String(from)) === 'data.mdb') kill();
    };
  } else throw new Error(`MERCURY_TEST_KILL_AT=${moment}: no such moment`);
  syncBuiltinESMExports();
}
