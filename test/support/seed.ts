/**
 * One seed for every property, fuzz and simulation test of a test process, so that any failure is reproduced by
 * setting one environment variable:
 *
 *   MERCURY_TEST_SEED=1234 node --test dist/test/http-fuzz.test.js
 *
 * Without the variable each test file draws a random seed once; a failing property or seeded check names it. With the
 * same seed a property test generates the same inputs (fast-check derives every run and the shrink from it).
 */
import { randomInt } from 'node:crypto';
import fc from 'fast-check';

export const TEST_SEED_VARIABLE = 'MERCURY_TEST_SEED';

let chosen: number | undefined;

/** This process's seed: MERCURY_TEST_SEED when set, else a random one drawn once (an integer in [0, 2^31)). */
export function testSeed(): number {
  if (chosen !== undefined) return chosen;
  const text = process.env[TEST_SEED_VARIABLE];
  if (text === undefined || text === '') {
    chosen = randomInt(0, 2 ** 31);
  } else {
    const parsed = Number(text);
    if (!Number.isSafeInteger(parsed) || parsed < 0 || parsed >= 2 ** 31) throw new RangeError(`${TEST_SEED_VARIABLE} must be an integer in [0, 2^31), got "${text}"`);
    chosen = parsed;
  }
  return chosen;
}

/** The line a failure carries so that it can be run again as it happened. */
export function reproduceWith(): string {
  return `reproduce with ${TEST_SEED_VARIABLE}=${testSeed()}`;
}

function withHint(error: unknown): Error {
  if (error instanceof Error) {
    // Keep the original error (an AssertionError keeps its class and diff); its message gains the seed.
    error.message = `${reproduceWith()}\n${error.message}`;
    return error;
  }
  return new Error(`${reproduceWith()}: ${String(error)}`);
}

/** Runs `check` (sync or async); if it throws, the error names the seed. For seeded checks outside fast-check. */
export function seeded<T>(check: () => T): T {
  let result: T;
  try {
    result = check();
  } catch (error) {
    throw withHint(error);
  }
  if (result instanceof Promise) return result.catch((error: unknown) => Promise.reject(withHint(error))) as T;
  return result;
}

/** `fc.assert` seeded from this process's seed; a failure names the seed, and fast-check adds the shrunk input. */
export function assertProperty<Ts>(property: fc.IProperty<Ts>, parameters?: fc.Parameters<Ts>): void;
export function assertProperty<Ts>(property: fc.IAsyncProperty<Ts>, parameters?: fc.Parameters<Ts>): Promise<void>;
export function assertProperty<Ts>(property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>, parameters: fc.Parameters<Ts> = {}): void | Promise<void> {
  return seeded(() => fc.assert(property as fc.IProperty<Ts>, { ...parameters, seed: testSeed() }));
}

/** `fc.sample` seeded from this process's seed (use inside `seeded` so that a failure names the seed). */
export function sampleSeeded<T>(arbitrary: fc.Arbitrary<T>, numRuns: number): T[] {
  return fc.sample(arbitrary, { numRuns, seed: testSeed() });
}
