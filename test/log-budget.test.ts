/**
 * The log's budget (src/logging): a node logs a line for each connection it refuses, before anyone is
 * authenticated. Found by audit: 120 connections sending 64 bytes of junk to the replication port wrote 240 lines in
 * about 3 s, with nothing to stop a peer from filling the node's disk. Each message now has a budget of lines per
 * window, and what it held back is counted in one line.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { budgetedLogger, type LogLevel, type Logger } from '../src/logging/index.js';
import { makeTempDir, removeDir, startServe, stopProcess } from './support/process.js';

/** A logger that keeps its lines. */
function keptLines(): { logger: Logger; lines: { level: LogLevel; message: string; fields: Record<string, unknown> }[] } {
  const lines: { level: LogLevel; message: string; fields: Record<string, unknown> }[] = [];
  const logger: Logger = {
    log: (level, message, fields = {}) => lines.push({ level, message, fields }),
    child: (base) => ({ log: (level, message, fields = {}) => lines.push({ level, message, fields: { ...base, ...fields } }), child: () => logger }),
  };
  return { logger, lines };
}

describe('log budget', () => {
  test('log budget: each message gets its lines per window; what it held back is counted once the window turns', () => {
    const { logger, lines } = keptLines();
    let now = 0;
    const budgeted = budgetedLogger(logger, { linesPerWindow: 3, linesPerPeerPerWindow: 3, windowMs: 1_000, messagesMax: 10 }, () => now);
    const child = budgeted.child({ peer: 'a' });
    for (let i = 0; i < 10; i++) child.log('warn', 'refused child', { i });
    budgeted.log('info', 'other', {});
    assert.deepEqual(
      lines.map((line) => [line.message, line.fields.i]),
      [['refused child', 0], ['refused child', 1], ['refused child', 2], ['other', undefined]],
      'three of ten, and another message has its own budget',
    );
    assert.equal(lines[0]!.fields.peer, 'a', 'a child logger keeps its fields');
    now = 999;
    child.log('warn', 'refused child', { i: 10 });
    assert.equal(lines.length, 4, 'still the same window');
    now = 1_000;
    child.log('warn', 'refused child', { i: 11 });
    assert.deepEqual(lines.slice(4).map((line) => [line.level, line.message, line.fields]), [
      ['warn', 'log lines suppressed', { of: 'refused child', suppressed: 8, windowMs: 1_000 }],
      ['warn', 'refused child', { peer: 'a', i: 11 }],
    ]);
  });

  // Found by audit (2026-12-06): the windows were on the wall clock, so a step back of an hour held every line of a
  // message past its first ones back for that hour.
  test('log budget: a wall clock stepped back does not hold a message back; a clock given that steps back turns the window', async () => {
    const { logger, lines } = keptLines();
    const wallNow = Date.now;
    let wallMs = wallNow();
    Date.now = () => wallMs;
    try {
      const budgeted = budgetedLogger(logger, { linesPerWindow: 1, linesPerPeerPerWindow: 1, windowMs: 50, messagesMax: 10 });
      budgeted.log('warn', 'stepped', { i: 0 });
      wallMs -= 3_600_000;
      await new Promise((resolve) => setTimeout(resolve, 200)); // four windows of real time
      budgeted.log('warn', 'stepped', { i: 1 });
    } finally {
      Date.now = wallNow;
    }
    assert.deepEqual(
      lines.map((line) => line.fields.i),
      [0, 1],
      'the second line comes four windows later in real time, whatever the wall clock says',
    );
    let now = 10_000;
    const given = budgetedLogger(logger, { linesPerWindow: 1, linesPerPeerPerWindow: 1, windowMs: 1_000, messagesMax: 10 }, () => now);
    given.log('warn', 'given', { i: 2 });
    now = 5_000;
    given.log('warn', 'given', { i: 3 });
    assert.deepEqual(
      lines.map((line) => line.fields.i),
      [0, 1, 2, 3],
    );
  });

  test('log budget: messages past the tracked number share one budget, so a message per peer cannot grow it', () => {
    const { logger, lines } = keptLines();
    const budgeted = budgetedLogger(logger, { linesPerWindow: 2, linesPerPeerPerWindow: 2, windowMs: 1_000, messagesMax: 4 }, () => 0);
    for (let i = 0; i < 100; i++) budgeted.log('info', `message ${i}`);
    assert.deepEqual(
      lines.map((line) => line.message),
      ['message 0', 'message 1', 'message 2', 'message 3', 'message 4', 'message 5'],
      'four messages tracked, the rest share one budget of two lines',
    );
  });

  // Found by audit (stop 36): one address refused a thousand times used the message's whole budget, and another
  // peer's refusal in the same window was never logged.
  test('log budget: one peer gets at most its share of a message; another peer\'s lines still get through', () => {
    const { logger, lines } = keptLines();
    const budgeted = budgetedLogger(logger, { linesPerWindow: 6, linesPerPeerPerWindow: 2, windowMs: 1_000, messagesMax: 10 }, () => 0);
    for (let port = 1; port <= 50; port++) budgeted.log('warn', 'child refused', { remote: `10.0.0.1:${port}` });
    for (let port = 1; port <= 50; port++) budgeted.log('warn', 'TLS connection refused', { remote: '[fd00::1]:' + String(port) });
    // The same /64 from other source addresses: one host (found by review: each address had its own share).
    for (let host = 2; host <= 20; host++) budgeted.log('warn', 'TLS connection refused', { remote: `[fd00::${host}]:443` });
    budgeted.log('warn', 'child refused', { remote: '10.0.0.2:7' });
    budgeted.log('warn', 'TLS connection refused', { remote: 'fd00:0:0:1::2' });
    budgeted.log('warn', 'child refused', {});
    assert.deepEqual(
      lines.map((line) => `${line.message} ${String(line.fields.remote)}`),
      [
        'child refused 10.0.0.1:1',
        'child refused 10.0.0.1:2',
        'TLS connection refused [fd00::1]:1',
        'TLS connection refused [fd00::1]:2',
        'child refused 10.0.0.2:7',
        'TLS connection refused fd00:0:0:1::2',
        'child refused undefined',
      ],
      'two lines per address (an IPv6 /64) whatever its port, then other peers and lines without a peer',
    );
  });
});

describe('log budget - a real node', () => {
  const dir = makeTempDir('log-budget');
  after(() => removeDir(dir));

  test('log budget: 1,200 TLS handshakes on the plaintext HTTP port from one address write at most its share of lines, and the node serves', async () => {
    const node = await startServe(dir);
    try {
      const { hostname, port } = new URL(node.url);
      // The first bytes of a TLS ClientHello: each connection is refused with a line (reason tls_on_plaintext).
      const hello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);
      // Counted from the child's stderr as it comes (node.stderr() keeps only its last 16 KiB).
      let refused = 0;
      node.child.stderr!.on('data', (text: string) => (refused += text.split('"TLS connection refused"').length - 1));
      const started = Date.now();
      for (let round = 0; round < 24; round++)
        await Promise.all(
          Array.from({ length: 50 }, () =>
            new Promise<void>((resolve) => {
              const socket = net.connect(Number(port), hostname, () => socket.write(hello));
              socket.on('data', () => socket.destroy());
              socket.on('error', () => {});
              socket.on('close', () => resolve());
              socket.setTimeout(5_000, () => socket.destroy());
            }),
          ),
        );
      // Lines are written as the refusals happen; give the last ones a moment to reach the pipe.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const elapsedMs = Date.now() - started;
      // One window of 10 s lets 10 lines of one address through (100 of all addresses); a slow run may have begun a
      // second window.
      const windows = Math.floor(elapsedMs / 10_000) + 1;
      assert.ok(refused >= 10, `the refusals are logged at all (${refused})`);
      assert.ok(refused <= 10 * windows, `${refused} lines for 1,200 refused connections from one address in ${elapsedMs} ms`);
      assert.equal((await fetch(`${node.url}/healthz`)).status, 200);
    } finally {
      await stopProcess(node.child);
    }
  });
});
