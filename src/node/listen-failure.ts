/**
 * A listener that could not start, as the operator should read it. Node's own line names neither the listener nor the
 * flag that set its address: `--listen 127.0.0.1:7069` failed with "listen EADDRINUSE: address already in use
 * 127.0.0.1:7070", an address the operator never typed (the replication port's default), and a host name that does
 * not resolve with "getaddrinfo ENOTFOUND name" (audit, 2026-12-07). LISTEN_FAILED names the listener, its flag and
 * default, the address, the system's reason with its errno, and what to do.
 */
import { MercuryError } from '../errors/index.js';

/** The node's listeners, as `mercury serve` sets them. */
export const LISTENERS = {
  http: { name: 'the HTTP listener', flag: '--listen', byDefault: undefined },
  replication: { name: 'the replication listener', flag: '--replication-listen', byDefault: 'the HTTP port + 1' },
  wire: { name: 'the wire listener', flag: '--wire-listen', byDefault: 'the HTTP port + 2' },
} as const;

export type Listener = (typeof LISTENERS)[keyof typeof LISTENERS];

/** What each refusal means, and what to do, for the errno values a listen meets in practice. */
const REASONS: Readonly<Record<string, (flag: string) => string>> = {
  EADDRINUSE: (flag) => `the address is in use (EADDRINUSE); stop what listens there, or give ${flag} another HOST:PORT (port 0: any free port)`,
  EADDRNOTAVAIL: (flag) => `no interface of this host has that address (EADDRNOTAVAIL); give ${flag} one of its addresses, or 0.0.0.0 for all of them`,
  EACCES: (flag) => `this user may not listen there (EACCES: a port below 1024 needs CAP_NET_BIND_SERVICE); give ${flag} a port from 1024`,
  ENOTFOUND: (flag) => `the host name does not resolve (ENOTFOUND); give ${flag} an address, or a name this host resolves`,
  EAI_AGAIN: (flag) => `the host name could not be resolved now (EAI_AGAIN: the resolver did not answer); give ${flag} an address, or try again`,
};

/**
 * `error` from listening on `host`:`port` as LISTEN_FAILED, when it is the system's (a listen, a bind or the name's
 * lookup); anything else is returned as it is.
 */
export function listenFailure(listener: Listener, host: string, port: number, error: unknown): unknown {
  const system = error as NodeJS.ErrnoException | undefined;
  if (typeof system?.code !== 'string' || !['listen', 'bind', 'getaddrinfo'].includes(system.syscall ?? '')) return error;
  const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const flag = listener.byDefault === undefined ? listener.flag : `${listener.flag}; by default ${listener.byDefault}`;
  const reason = REASONS[system.code]?.(listener.flag) ?? `${system.message} (${system.code})`;
  return new MercuryError('LISTEN_FAILED', `${listener.name} (${flag}) cannot listen on ${address}: ${reason}`, { cause: error });
}
