/**
 * A TCP port on 127.0.0.1 for a program that must be told its port before it listens: redis-server and etcd, or a
 * node whose advertised URL names its port. Tests also use it for an address where nothing listens.
 *
 * The port is drawn at random from below the kernel's ephemeral range, then bound once to check that it is free. A
 * port taken from `listen(0)` and closed again is back in the ephemeral range, where the kernel may hand it to any
 * process's next `listen(0)` or outgoing connection before the program listens on it: a test run with
 * `--test-concurrency=2` saw EADDRINUSE that way. The kernel hands out no port below its range, so only another caller
 * of this function can take it first, at one chance in about 20,000 per pair of callers.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** The lowest port drawn: above the ports services conventionally use. */
const PORT_MIN = 10_000;
/** Linux's default lower bound of the ephemeral range (net.ipv4.ip_local_port_range). */
const EPHEMERAL_LOW_DEFAULT = 32_768;
const ATTEMPTS_MAX = 50;

/** The lowest port the kernel hands out for `listen(0)` and outgoing connections. */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : EPHEMERAL_LOW_DEFAULT;
  } catch {
    return EPHEMERAL_LOW_DEFAULT;
  }
}

/** Listens on `port` (0: any) and closes again; resolves with the port bound, or undefined if it was taken. */
async function tryBind(port: number): Promise<number | undefined> {
  const server = createServer();
  const bound = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (!bound) return undefined;
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}

export async function freePort(): Promise<number> {
  const high = ephemeralLow() - 1;
  if (high > PORT_MIN) {
    for (let attempt = 0; attempt < ATTEMPTS_MAX; attempt++) {
      const port = await tryBind(PORT_MIN + Math.floor(Math.random() * (high - PORT_MIN + 1)));
      if (port !== undefined) return port;
    }
  }
  // A machine whose ephemeral range starts low, or whose ports below it are all taken: the kernel's choice.
  const port = await tryBind(0);
  if (port === undefined) throw new Error('no free TCP port on 127.0.0.1');
  return port;
}
