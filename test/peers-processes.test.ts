import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { ProcessGroup, ProcessStartError, processCpuMicros, residentBytes } from '../bench/peers/processes.js';
import { freePort } from '../bench/support/free-port.js';

const node = process.execPath;
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('peers processes: a process is ready when its output matches, and stopAll stops it and removes temp dirs', async () => {
  const group = new ProcessGroup();
  const directory = group.tempDir('test');
  writeFileSync(join(directory, 'file'), 'x');
  const child = await group.start({
    name: 'sleeper',
    command: node,
    args: ['-e', 'console.error("starting"); setTimeout(() => console.log("ready on port 4242"), 50); setInterval(() => {}, 1000);'],
    ready: /ready on port (\d+)/,
  });
  assert.equal(child.readyMatch[1], '4242');
  assert.match(child.output(), /starting/);
  assert.equal(group.running, 1);
  assert.ok(alive(child.pid));
  await group.stopAll();
  assert.equal(group.running, 0);
  assert.equal(alive(child.pid), false);
  assert.equal(existsSync(directory), false);
  await group.stopAll(); // twice is fine
  await assert.rejects(group.start({ name: 'late', command: node, args: ['-e', ''], ready: /x/ }), ProcessStartError);
});

test('peers processes: a process that exits before it is ready is an error with its output', async () => {
  const group = new ProcessGroup();
  await assert.rejects(
    group.start({ name: 'quitter', command: node, args: ['-e', 'console.error("bad flag --upstream"); process.exit(2)'], ready: /ready/ }),
    (error: unknown) => error instanceof ProcessStartError && /quitter exited \(code 2\)/.test(error.message) && /bad flag --upstream/.test(error.message),
  );
  assert.equal(group.running, 0);
  await group.stopAll();
});

test('peers processes: a missing command and a process never ready are errors, and nothing is left running', async () => {
  const group = new ProcessGroup(200);
  await assert.rejects(group.start({ name: 'ghost', command: '/nonexistent/etcd', args: [], ready: /ready/ }), /ghost: cannot start/);
  let pid = -1;
  await assert.rejects(
    group.start({ name: 'mute', command: node, args: ['-e', 'console.log(process.pid); setInterval(() => {}, 1000)'], ready: /never/, readyMsMax: 300 }),
    (error: unknown) => {
      pid = Number(/\d+/.exec((error as Error).message.split('\n')[1] ?? '')?.[0]);
      return /mute was not ready within 300 ms/.test((error as Error).message);
    },
  );
  assert.equal(alive(pid), false);
  assert.equal(group.running, 0);
  await group.stopAll();
});

test('peers processes: a process that ignores SIGTERM is killed after the grace period', async () => {
  const group = new ProcessGroup(200);
  const child = await group.start({
    name: 'stubborn',
    command: node,
    args: ['-e', 'process.on("SIGTERM", () => {}); console.log("ready"); setInterval(() => {}, 1000)'],
    ready: /ready/,
  });
  const started = performance.now();
  await group.stopAll();
  assert.equal(child.child.signalCode, 'SIGKILL');
  assert.ok(performance.now() - started >= 150);
});

test('peers processes: a free port lies below the ephemeral range and can be listened on; resident memory is read from /proc status', async () => {
  const port = await freePort();
  // Below the range the kernel hands out for listen(0) and outgoing connections, so no other socket takes it first.
  const ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]);
  assert.ok(port >= 10_000 && port < ephemeralLow, `port ${port}`);
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.equal(residentBytes(7, () => 'Name:\tetcd\nVmRSS:\t   2048 kB\n'), 2 * 1024 * 1024);
  assert.throws(() => residentBytes(7, () => 'Name:\tetcd\n'), /no VmRSS/);
  // Fields 14 and 15 (utime, stime) in ticks of 10 ms; the command name may hold spaces and parentheses.
  const stat = '4242 (redis server (x)) S 1 4242 4242 0 -1 4194560 3000 0 0 0 250 50 0 0 20 0 5 0 100 0 0';
  assert.equal(processCpuMicros(4242, () => stat), 3_000_000);
  assert.throws(() => processCpuMicros(1, () => '1 (x) S'), /no CPU times/);
  assert.ok(processCpuMicros(process.pid, (path) => readFileSync(path, 'utf8')) > 0);
});
