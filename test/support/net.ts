/**
 * Network helpers for client tests: a port nothing listens on, a TCP proxy whose connections a test can cut (to
 * drop a client's socket without touching the node), a proxy that stalls a snapshot part-way, small HTTP servers that
 * misbehave on purpose, and addresses where a connection or a TLS handshake never completes.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export { freePort } from '../../bench/support/free-port.js';

export interface TcpProxy {
  readonly url: string;
  /** Destroys every open connection (both sides), as a network cut would. */
  cutAll(): void;
  /** How many connections were accepted so far. */
  accepted(): number;
  /** While on, cuts every open connection and closes each new one at once (a partition that lasts); off heals it. */
  hold(on: boolean): void;
  close(): Promise<void>;
}

/** Forwards 127.0.0.1:<random port> to `targetUrl`'s host and port. */
export async function startTcpProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  const open = new Set<Socket>();
  let accepted = 0;
  let held = false;
  const server: Server = createServer((client) => {
    accepted++;
    if (held) return void client.destroy();
    const upstream = connect({ host: target.hostname, port: Number(target.port) });
    open.add(client);
    open.add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    cutAll: () => {
      for (const socket of open) socket.destroy();
      open.clear();
    },
    accepted: () => accepted,
    hold: (on) => {
      held = on;
      if (!on) return;
      for (const socket of open) socket.destroy();
      open.clear();
    },
    close: async () => {
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A TCP proxy that forwards everything to `target` ("host:port"), but hands back only the first `limit` bytes of
 * each connection's answer, then stalls it: a replica behind it that asked for a snapshot stays inside it, so a kill
 * always falls mid-install. `limit` is read when a connection opens, so a test may let a join through in full and
 * stall only the next connection (a resync).
 */
export async function stallingProxy(target: string, limit: number): Promise<{ address: string; setLimit: (bytes: number) => void; close: () => Promise<void> }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set<Socket>();
  let nextLimit = limit;
  const server = createServer((client) => {
    const upstream = connect(port, host);
    sockets.add(client).add(upstream);
    const connectionLimit = nextLimit;
    let forwarded = 0;
    client.on('data', (data) => upstream.write(data));
    upstream.on('data', (data) => {
      const take = Math.min(data.length, connectionLimit - forwarded);
      if (take > 0) client.write(data.subarray(0, take));
      forwarded += take;
      if (forwarded >= connectionLimit) upstream.pause();
    });
    for (const socket of [client, upstream]) socket.on('error', () => {});
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    setLimit: (bytes) => {
      nextLimit = bytes;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface FakeServer {
  readonly url: string;
  /** Requests received so far, as "METHOD path". */
  readonly requests: string[];
  close(): Promise<void>;
}

/** An HTTP server that records each request and answers it with `handle` (which may also destroy the socket). */
export async function startFakeServer(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<FakeServer> {
  const requests: string[] = [];
  const server = createHttpServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => handle(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface Unfinished {
  readonly url: string;
  close(): Promise<void>;
}

/** How long connectNeverCompletes's listener stays: far longer than a test waits on it. */
const LISTENER_BLOCKED_MS = 120_000;

/**
 * A port where a TCP connect never completes, as on a path that drops packets, without root: a listener in a child
 * process that never accepts (its event loop blocked), whose accept queue (backlog 1) is filled here; Linux then drops
 * each further SYN, and the connect waits for the SYN's retransmissions.
 */
export async function connectNeverCompletes(): Promise<Unfinished> {
  // Blocked for at most LISTENER_BLOCKED_MS, then gone: a test runner killed before `close` left it blocked forever.
  const listener = `const s = require('node:net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => { console.log(s.address().port); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${LISTENER_BLOCKED_MS}); process.exit(0); });`;
  const child = spawn(process.execPath, ['-e', listener], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const port = Number(line.toString('utf8').trim());
  const queued: Socket[] = [];
  // Judged after the poll that follows the timer, not in the timer: on a loaded machine the timer and the connect's
  // completion can be due in the same turn, and timers run first; a completed connect taken for a dropped SYN left
  // the queue short, and the client's connect then completed.
  const connects = (socket: Socket): Promise<boolean> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => setImmediate(() => resolve(!socket.connecting)), 300);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  for (;;) {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    if (await connects(socket)) {
      queued.push(socket);
      continue;
    }
    socket.destroy();
    break;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const socket of queued) socket.destroy();
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** An https URL whose TLS handshake never completes: the server accepts the connection and never answers the ClientHello. */
export async function handshakeNeverCompletes(): Promise<Unfinished & { connections(): number }> {
  const open = new Set<Socket>();
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    close: async () => {
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
