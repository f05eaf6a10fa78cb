/**
 * Authentication at the node's doors: HTTP requests (and watch upgrades) and replication HELLOs. The node holds one
 * `AuthGuard`; with `auth: 'off'` it answers `undefined` for everyone, which every check in scopes.ts lets through.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { MercuryError } from '../api/index.js';
import { peerCertificate } from '../net/index.js';
import type { TokenRegistry } from './registry.js';
import { requireReplicate, type Principal } from './scopes.js';

/** `required`: every route but /healthz and /readyz needs a credential. `off`: no checks (loopback tests, trusted hosts). */
export type AuthMode = 'required' | 'off';
export const AUTH_MODES: readonly AuthMode[] = ['required', 'off'];

/**
 * The subject CN of a verified client certificate on `socket`, or undefined. Only a TLS socket whose peer certificate
 * passed verification against the node's CA (`authorized`) counts; the TLS layer decides whether to ask for one.
 */
export function peerCertificateSubject(socket: Socket | undefined): string | undefined {
  const tls = socket as Partial<TLSSocket> | undefined;
  if (tls?.encrypted !== true) return undefined;
  // src/net/tls.ts reads it once per socket and names only a certificate the CA verified.
  const name = peerCertificate(tls as TLSSocket).name;
  return name === undefined || name.length === 0 ? undefined : name;
}

export class AuthGuard {
  constructor(
    readonly mode: AuthMode,
    readonly registry: TokenRegistry,
  ) {}

  get required(): boolean {
    return this.mode === 'required';
  }

  /**
   * The Authorization header each keep-alive connection last presented, and whom it named. Clients send the same
   * header on every request of a connection; checking it again costs a pattern match and a SHA-256 (about 4 µs of a
   * request's 50-90). The cached principal counts only while the registry still holds that very object for its id:
   * a revocation, a scope change or a rotated secret replaces or removes it (registry.ts `add`, `remove`, `reload`),
   * so the next request is checked in full, as before.
   */
  private readonly lastOnConnection = new WeakMap<Socket, { readonly authorization: string; readonly principal: Principal }>();

  /** The principal of an HTTP request or watch upgrade; undefined when auth is off. Throws UNAUTHENTICATED. */
  authenticateRequest(req: IncomingMessage): Principal | undefined {
    if (this.mode === 'off') return undefined;
    const authorization = req.headers.authorization;
    const socket = req.socket;
    if (authorization !== undefined) {
      const last = this.lastOnConnection.get(socket);
      if (last !== undefined && last.authorization === authorization && this.registry.principalById(last.principal.id) === last.principal) return last.principal;
    }
    const principal = this.registry.authenticate(authorization, peerCertificateSubject(socket));
    if (authorization !== undefined) this.lastOnConnection.set(socket, { authorization, principal });
    return principal;
  }

  /**
   * The principal of a wire connection's HELLO (src/wire/): its token, else its verified client certificate's grant;
   * undefined when auth is off. Throws UNAUTHENTICATED.
   */
  authenticateConnection(token: string | undefined, socket: Socket): Principal | undefined {
    if (this.mode === 'off') return undefined;
    return token === undefined ? this.registry.authenticate(undefined, peerCertificateSubject(socket)) : this.registry.authenticateToken(token);
  }

  /**
   * `principal` as it stands now, for a connection that authenticated earlier: the same object while its record is
   * unchanged, the new one after its scopes changed. Throws UNAUTHENTICATED once it was revoked, once its credential
   * was replaced, or while its certificate subject is named by another grant too (registry.ts `current`).
   */
  current(principal: Principal | undefined): Principal | undefined {
    if (principal === undefined || this.mode === 'off') return undefined;
    return this.registry.current(principal);
  }

  /**
   * A child replica's HELLO: its token, else its verified certificate's subject; it needs `replicate` (or admin).
   * Returns the principal, or the refusal to send.
   */
  authenticateChild(token: string | undefined, socket: Socket | undefined): ChildVerdict {
    if (this.mode === 'off') return { principal: undefined };
    return childVerdict(
      () => (token === undefined ? this.registry.authenticate(undefined, peerCertificateSubject(socket)) : this.registry.authenticateToken(token)),
      // The registry's message for a request without a credential names the client's flags; a replica has its own.
      (error) =>
        token === undefined && peerCertificateSubject(socket) === undefined
          ? 'no credential: a replica presents a token with the replicate scope (start it with --replication-token-file or $MERCURY_REPLICATION_TOKEN), or a client certificate that a grant names'
          : `${error.message}${token === undefined ? ' (start the replica with --replication-token-file or $MERCURY_REPLICATION_TOKEN)' : ''}`,
    );
  }

  /**
   * A child admitted earlier, after its token's record was replaced: the principal it replicates as now, while the new
   * grant still lets it (the same credential, `replicate` or admin), else the refusal that ends its session. A widened
   * or renamed grant keeps the session (decision 57).
   */
  recheckChild(principal: Pick<Principal, 'id' | 'name'> | undefined): ChildVerdict {
    if (principal === undefined || this.mode === 'off') return { principal: undefined };
    return childVerdict(
      () => this.registry.current(principal),
      (error) => error.message,
    );
  }
}

/** What a child's credential gets it: the principal it replicates as, or the refusal to send it. */
export type ChildVerdict = { principal: Principal | undefined } | { refuse: 'UNAUTHENTICATED' | 'PERMISSION_DENIED'; message: string };

/** `resolve`'s principal if it may replicate, else the refusal, with `message` saying why. */
function childVerdict(resolve: () => Principal, message: (error: MercuryError) => string): ChildVerdict {
  try {
    const principal = resolve();
    requireReplicate(principal);
    return { principal };
  } catch (error) {
    if (!(error instanceof MercuryError)) throw error;
    return { refuse: error.code === 'PERMISSION_DENIED' ? 'PERMISSION_DENIED' : 'UNAUTHENTICATED', message: message(error) };
  }
}
