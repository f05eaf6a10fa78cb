/**
 * Logging - a stderr pipe nobody reads. Node writes stderr asynchronously to a pipe and keeps whatever the pipe did not
 * take, so a `mercury serve` whose parent stopped reading its stderr held every line it logged from then on (audit,
 * 2026-12-07: 100,000 lines of 200 bytes, 20 MB held). Now StderrLines holds at most LOG_BUFFERED_BYTES_MAX and counts
 * the lines past it as lost (`mercury_log_lines_lost_total`). The writer is a real child process, its stderr a real
 * pipe that this test never reads; it logs through the StderrLines that `mercury serve` uses.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { LOG_BUFFERED_BYTES_MAX } from '../src/logging/index.js';

const LINES = 100_000;
const LINE = `${JSON.stringify({ level: 'warn', message: 'TLS connection refused', pad: 'x'.repeat(140) })}\n`;
const LOGGING_MODULE = fileURLToPath(new URL('../src/logging/index.js', import.meta.url));

test('logging: a stderr pipe nobody reads holds at most LOG_BUFFERED_BYTES_MAX of lines; the rest are counted lost', async () => {
  assert.ok(LINES * LINE.length > 10 * LOG_BUFFERED_BYTES_MAX, 'the lines are many times the bound');
  const script = `
    const { StderrLines } = await import(${JSON.stringify(LOGGING_MODULE)});
    const lines = new StderrLines();
    const line = ${JSON.stringify(LINE)};
    for (let i = 0; i < ${LINES}; i++) lines.write(line);
    process.stdout.write(JSON.stringify({ buffered: process.stderr.writableLength, lost: lines.lost }));
  `;
  // stderr piped and never read: the kernel's pipe fills, then the writer holds what it logs.
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (out += text));
  // The writer's own stdout write is asynchronous too: read it until the answer is whole, then end the child (it
  // would otherwise wait for its stderr to drain, forever).
  const deadline = Date.now() + 10_000;
  while (!out.endsWith('}') && Date.now() < deadline && child.exitCode === null) await new Promise((resolve) => setTimeout(resolve, 20));
  child.kill('SIGKILL');
  const { buffered, lost } = JSON.parse(out) as { buffered: number; lost: number };
  // Before: buffered 19.7 MB of the 20 MB logged, nothing lost.
  assert.ok(buffered <= LOG_BUFFERED_BYTES_MAX + LINE.length, `the writer holds ${buffered} bytes of lines; at most ${LOG_BUFFERED_BYTES_MAX} and one line`);
  assert.ok(lost >= LINES - Math.ceil((LOG_BUFFERED_BYTES_MAX + 1024 * 1024) / LINE.length), `${lost} of ${LINES} lines counted lost`);
});
