/**
 * Open TLS connections whose peer certificate verified, re-checked when the CA file changes.
 *
 * A TLS handshake verifies the peer's certificate once, against the CA of that moment; the connection keeps the
 * identity for as long as it stays open. "Revoke by rotating the CA" (docs/security.md) must also reach the
 * connections already open, or a watch, a replica's stream, a wire connection or an HTTP keep-alive connection
 * authenticated by a certificate of the old CA would stay authorised after the operator replaced it (reproduced over
 * HTTP at stop 36: a request on such a connection was served after the reload; a new connection got 401).
 *
 * So every listener and outgoing connection of a node hands its verified TLS sockets to `track`, and when a reload
 * brings a CA file with other bytes, `recheck` walks each one's peer chain again against the new CA certificates and
 * closes those it no longer reaches. Connections the new file still signs are left alone: the usual staged rotation
 * (old and new CA in one file, new certificates everywhere, then the old CA removed) closes nothing until the last
 * step, and then only what still holds an old certificate. A closed peer reconnects and meets the new CA in its
 * handshake, which names why it is refused.
 *
 * A certificate also ends by itself: a connection outlives its peer's certificate unless someone looks. The node's
 * file poll (every 2 s) calls `closeExpired`, which does nothing until the earliest expiry among the tracked peers'
 * certificates has passed, and then runs the same re-check, which closes every connection whose chain holds a
 * certificate no longer valid. Only each leaf's expiry is kept (3 us at `track`): an intermediate that expires before
 * the leaves it signed is noticed at the next leaf's expiry or CA change (issuers commonly cap a leaf's validity at
 * their own).
 *
 * The walk is a re-check, not OpenSSL's verification: it follows the chain the handshake recorded (the certificates
 * the peer sent, completed from the old CA file) from the leaf up, and accepts the first certificate that is itself
 * in the new file or is signed by one in it, at a time when both are valid. An intermediate placed in the CA file
 * counts as an anchor here, where OpenSSL wants the whole chain to a self-signed root: the check can keep open a
 * connection that a new handshake would refuse only in that setup, never close one that a handshake would accept.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket, DetailedPeerCertificate } from 'node:tls';

/** Chains longer than this are not followed (OpenSSL's default verify depth is 100; real chains have 2 to 4 links). */
const CHAIN_DEPTH_MAX = 16;

function validAt(certificate: X509Certificate, nowMs: number): boolean {
  return Date.parse(certificate.validFrom) <= nowMs && nowMs <= Date.parse(certificate.validTo);
}

function signedBy(certificate: X509Certificate, issuer: X509Certificate): boolean {
  return certificate.checkIssued(issuer) && certificate.verify(issuer.publicKey);
}

/** Whether `certificate` is one of `authorities`, or is signed by one valid at `nowMs`. */
function anchored(certificate: X509Certificate, authorities: readonly X509Certificate[], nowMs: number): boolean {
  for (const authority of authorities) {
    if (authority.fingerprint256 === certificate.fingerprint256) return true;
    if (validAt(authority, nowMs) && signedBy(certificate, authority)) return true;
  }
  return false;
}

/**
 * True when the chain `socket`'s handshake recorded reaches one of `authorities`: a link that is one of them, or is
 * signed by one, each link signed by the next, every certificate valid at `nowMs`. False for a socket without a
 * peer certificate. The leaf alone is read first (3 us; the whole chain as objects costs 195 us, so it is read only
 * for a leaf that an intermediate signed); a leaf's signature check is about 60 us (RSA 2048, measured here).
 */
export function peerChainSignedBy(socket: TLSSocket, authorities: readonly X509Certificate[], nowMs: number): boolean {
  let certificate = socket.getPeerX509Certificate();
  let link: DetailedPeerCertificate | undefined;
  for (let depth = 0; certificate !== undefined && depth < CHAIN_DEPTH_MAX; depth++) {
    if (!validAt(certificate, nowMs)) return false;
    if (anchored(certificate, authorities, nowMs)) return true;
    link = link === undefined ? socket.getPeerCertificate(true) : link.issuerCertificate;
    const next: DetailedPeerCertificate | undefined = link.issuerCertificate;
    // A self-signed root is its own issuer: the chain ends there.
    if (next?.raw === undefined || next === link || next.fingerprint256 === link.fingerprint256) return false;
    const issuer = new X509Certificate(next.raw);
    if (!signedBy(certificate, issuer)) return false;
    certificate = issuer;
  }
  return false;
}

/** When `certificate` stops being valid; never (infinity) when that cannot be read, so the poll never loops on it. */
function expiryMs(certificate: X509Certificate | undefined): number {
  const ms = certificate === undefined ? Number.NaN : Date.parse(certificate.validTo);
  return Number.isNaN(ms) ? Number.POSITIVE_INFINITY : ms;
}

function leafExpiryMs(socket: TLSSocket): number {
  try {
    return expiryMs(socket.getPeerX509Certificate());
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/** The verified TLS connections of one node (both directions), to re-check when its CA file changes or a peer's certificate expires. */
export class VerifiedConnections {
  private readonly sockets = new Set<TLSSocket>();
  /** The earliest end of validity among the tracked peers' certificates (a socket gone since does not lower it). */
  private nextExpiryMs = Number.POSITIVE_INFINITY;
  /** One close listener shared by every socket: an idle watcher's connection holds no closure of its own. */
  private readonly untrack: (this: TLSSocket) => void;

  constructor() {
    const sockets = this.sockets;
    this.untrack = function (this: TLSSocket) {
      sockets.delete(this);
    };
  }

  /** Keeps `socket` for `recheck` while it is open, if its peer's certificate verified (else it carries no identity). */
  track(socket: TLSSocket): void {
    if (!socket.authorized || socket.destroyed || this.sockets.has(socket)) return;
    this.sockets.add(socket);
    socket.once('close', this.untrack);
    this.nextExpiryMs = Math.min(this.nextExpiryMs, leafExpiryMs(socket));
  }

  /**
   * Once the earliest tracked certificate's validity ended (`nowMs` past it), re-checks every connection against
   * `authorities` as `recheck` does, closing those whose chain is no longer valid; returns how many. Before that, a
   * comparison: the file poll calls it every 2 s.
   */
  closeExpired(authorities: readonly X509Certificate[], nowMs: number): number {
    if (nowMs <= this.nextExpiryMs) return 0;
    return this.recheck(authorities, nowMs);
  }

  get size(): number {
    return this.sockets.size;
  }

  /**
   * Closes every tracked connection whose peer chain the CA file's certificates (`authorities`, TlsMaterial) do not
   * reach (or whose certificate expired); returns how many. Connections with one certificate are checked once (a
   * fleet's watchers often share one): 6 us per connection then, about 70 us per distinct certificate (measured with
   * 500 connections, stop 37).
   */
  recheck(authorities: readonly X509Certificate[], nowMs: number): number {
    const verdicts = new Map<string, boolean>();
    let closed = 0;
    let nextExpiryMs = Number.POSITIVE_INFINITY;
    for (const socket of [...this.sockets]) {
      let keep: boolean;
      try {
        const leaf = socket.getPeerX509Certificate();
        const fingerprint = leaf?.fingerprint256 ?? '';
        keep = verdicts.get(fingerprint) ?? peerChainSignedBy(socket, authorities, nowMs);
        verdicts.set(fingerprint, keep);
        if (keep) nextExpiryMs = Math.min(nextExpiryMs, expiryMs(leaf));
      } catch {
        keep = false; // a chain that cannot be read again cannot be trusted again
      }
      if (keep) continue;
      closed++;
      this.sockets.delete(socket);
      socket.destroy();
    }
    this.nextExpiryMs = nextExpiryMs;
    return closed;
  }
}
