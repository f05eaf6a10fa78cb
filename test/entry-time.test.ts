/**
 * Entry times follow the root's wall clock (docs/decisions.md, record 42): a step of the clock forward, once corrected,
 * leaves no mark on later entries, in the same process or after a restart, and the step is logged (CLOCK_STEPPED).
 * Real node, real HTTP on port 0, real LMDB in a temp dir; the node's clock is a manual one whose wall time a test
 * steps while monotonic time goes on, as an NTP step does.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import type { Logger } from '../src/logging/index.js';
import { MercuryNode } from '../src/node/index.js';
import { requestJson, type LogPage } from './support/http.js';
import { ManualClock } from './support/manual-clock.js';
import { makeTempDir, removeDir } from './support/process.js';

const DAY_MS = 86_400_000;

function warningLogger(codes: string[]): Logger {
  const logger: Logger = {
    log(level, _message, fields) {
      if (level === 'warn' && typeof fields?.code === 'string') codes.push(fields.code);
    },
    child: () => logger,
  };
  return logger;
}

describe('entry times', () => {
  const dir = makeTempDir('entry-time');
  const clock = new ManualClock(Date.now());
  const warnings: string[] = [];
  let node: MercuryNode | undefined;

  after(async () => {
    await node?.close();
    removeDir(dir);
  });

  const start = async (): Promise<MercuryNode> =>
    (node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', clock, logger: warningLogger(warnings) }));
  /** PUTs a key and returns the time of the entry that holds it, as GET /v1/log shows it. */
  const putTime = async (url: string, key: string): Promise<number> => {
    const { seq } = await requestJson<{ seq: number }>(url, 'PUT', `/v1/kv/${key}`, { body: 'v' });
    const page = await requestJson<LogPage>(url, 'GET', `/v1/log?from=${seq}&limit=1`);
    return page.entries[0]!.timeMs;
  };

  test('entry times: a corrected step of the wall clock forward does not pin later entries, nor after a restart', async () => {
    let { url } = await start();
    clock.advance(1_000);
    assert.equal(await putTime(url, 'before'), clock.nowMs());

    clock.stepWall(10 * DAY_MS);
    clock.advance(1_000);
    assert.equal(await putTime(url, 'during'), clock.nowMs(), 'the entry carries the clock as it reads');

    clock.stepWall(-10 * DAY_MS);
    clock.advance(1_000);
    assert.equal(await putTime(url, 'after'), clock.nowMs(), 'once the clock is corrected, entries carry the corrected time');
    assert.deepEqual(warnings, ['CLOCK_STEPPED', 'CLOCK_STEPPED'], 'both steps are logged');

    clock.stepWall(10 * DAY_MS);
    clock.advance(1_000);
    await putTime(url, 'during-again');
    await node!.close();
    node = undefined;
    clock.stepWall(-10 * DAY_MS);
    ({ url } = await start());
    clock.advance(1_000);
    assert.equal(await putTime(url, 'restarted'), clock.nowMs(), 'a restart does not take the head entry time as a floor');
    assert.equal(warnings.length, 4, 'the restart logs that entry times went back from the head entry');
  });
});
