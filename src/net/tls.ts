/**
 * TLS for every listener and outgoing connection of a node, from one set of files (`--tls-cert`, `--tls-key`,
 * `--tls-ca`):
 *
 * - The HTTP API and its watch WebSocket are served over TLS (https, wss). Client certificates are asked for and
 *   optional: one verified against the CA names the caller (`clientCertificateName`, which src/auth maps to a
 *   principal); one that fails verification gets 401 for every request on its connection.
 * - Replication is mutual TLS: a child must present a certificate the CA signed (else a REFUSE frame saying why),
 *   and it checks its upstream's certificate against the CA and against the address it dialled.
 * - Write forwarding to the upstream's HTTP API uses the same CA and presents the node's certificate.
 *
 * The files are read once at start and again when they change (polled on the clock, which also catches Kubernetes'
 * symlink swaps that fs.watch misses) or when the operator sends SIGHUP. A reload that fails (a half-written file, a
 * key that does not match its certificate) keeps the previous credentials and says so; one that could not open the files
 * (the process out of descriptors: EMFILE) is tried again at the next poll. A new certificate or key drops
 * no connection: servers take the new context for new handshakes (tls.Server#setSecureContext), clients for new
 * connections. A new CA file closes the open connections whose peer certificate it no longer signs
 * (src/net/tls-connections.ts), so that rotating the CA revokes what is already connected too.
 *
 * Sniffing: a TLS handshake starts with the record type byte 0x16, which neither a plaintext HTTP request (a method
 * name) nor a replication frame (src/replication/protocol.ts: a length prefix far below 0x16000000) can start with.
 * Each listener reads the first byte of a connection and answers a peer that uses the wrong protocol in that
 * peer's own protocol, so both ends get a message that names the fix.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { createSecureContext, type TLSSocket, type TlsOptions } from 'node:tls';
import { systemClock, type Clock, type TimerHandle } from '../clock/index.js';
import { MercuryError } from '../errors/index.js';
import { readFileBounded, SMALL_FILE_BYTES_MAX, type SecretFileWarn } from '../fs/bounded-read.js';
import { isOutOfFiles } from '../fs/out-of-files.js';
import type { Logger } from '../logging/index.js';
import { VerifiedConnections } from './tls-connections.js';

/** The three files of `--tls-cert`, `--tls-key` and `--tls-ca`. */
export interface TlsPaths {
  readonly certPath: string;
  readonly keyPath: string;
  readonly caPath: string;
}

/** The contents of the files, as one consistent set: every connection uses one such object from start to end. */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
  /** The certificates of the CA file, parsed once: a CA change re-checks open connections against them. */
  readonly authorities: readonly X509Certificate[];
  /** The certificate's subject CN and expiry, for logs and status. */
  readonly subject: string;
  readonly validToMs: number;
}

/** How often the files are checked for a change. Cheap (three stat calls); a rotated certificate is live within it. */
export const TLS_RELOAD_POLL_MS = 2_000;

/** The first byte of every TLS connection: a handshake record. */
export const TLS_HANDSHAKE_BYTE = 0x16;

const TLS_MIN_VERSION = 'TLSv1.2';

/**
 * Reads and checks the files; a bad one is CONFIG_INVALID naming the flag and the file. Each is read with
 * readFileBounded: a FIFO, a device or a file over SMALL_FILE_BYTES_MAX swapped in is refused, never read.
 */
export function readTlsMaterial(paths: TlsPaths, warnSecret?: SecretFileWarn): TlsMaterial {
  const read = (flag: string, path: string): Buffer => readFileBounded(path, { what: flag, bytesMax: SMALL_FILE_BYTES_MAX });
  const cert = read('--tls-cert', paths.certPath);
  // The private key: a mode that lets others read it is named in a warning (secretFileWarning).
  const key = readFileBounded(paths.keyPath, { what: '--tls-key', bytesMax: SMALL_FILE_BYTES_MAX, secret: warnSecret });
  const ca = read('--tls-ca', paths.caPath);
  const authorities = checkCaBundle('--tls-ca', paths.caPath, ca);
  try {
    // Fails on a key that does not match the certificate, or a file that is not PEM.
    createSecureContext({ cert, key, ca });
  } catch (error) {
    throw credentialsError({ what: '--tls-cert', path: paths.certPath, bytes: cert }, { what: '--tls-key', path: paths.keyPath, bytes: key }, error as Error);
  }
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new MercuryError('CONFIG_INVALID', `--tls-cert ${paths.certPath} is not a PEM certificate: ${(error as Error).message}`);
  }
  const subject = /(?:^|\n)CN=([^\n]*)/.exec(certificate.subject)?.[1] ?? certificate.subject;
  return Object.freeze({ cert, key, ca, authorities, subject, validToMs: Date.parse(certificate.validTo) });
}

/**
 * OpenSSL reads the certificates of a CA file until the first one it cannot read, and silently keeps those before it:
 * a bundle cut short inside a certificate (a copy interrupted, a full disk, a reload polled while the file was being
 * written in place) or damaged in one would be taken as the CAs before it, and peers signed by the rest refused with
 * no word of the file. So every PEM block begun in the file must end, and every certificate block must parse. `what`
 * names the file's flag in the error (`--tls-ca` for a node, `--ca (or $MERCURY_CA)` for the CLI). Returns the
 * certificates, parsed.
 */
export function checkCaBundle(what: string, path: string, ca: Buffer): X509Certificate[] {
  const { begun, blocks } = pemBlocks(ca);
  if (blocks.length !== begun)
    throw new MercuryError('CONFIG_INVALID', `${what} ${path} is cut short: ${begun - blocks.length} of its ${begun} PEM blocks have no END line; give the whole CA file`);
  // An empty file, a token or a key alone: OpenSSL would trust nothing from it, and every connection would fail as if
  // the peer's certificate were wrong (audit, stop 37: "pass the cluster CA", to a user who had passed a file).
  if (!blocks.some((block) => block.startsWith('-----BEGIN CERTIFICATE-----')))
    throw new MercuryError('CONFIG_INVALID', `${what} ${path} holds no certificate (no -----BEGIN CERTIFICATE----- block); give the cluster CA's certificate file`);
  return blocks.flatMap((block, index) => {
    if (!block.startsWith('-----BEGIN CERTIFICATE-----')) return [];
    try {
      return [new X509Certificate(block)];
    } catch (error) {
      throw new MercuryError('CONFIG_INVALID', `${what} ${path}: certificate ${index + 1} of ${blocks.length} is damaged (${(error as Error).message}); give the whole CA file`);
    }
  });
}

/** The PEM blocks of a file that end, and how many began: fewer ended than began is a file cut short. */
function pemBlocks(bytes: Buffer): { begun: number; blocks: string[] } {
  const text = bytes.toString('latin1');
  return { begun: text.split('-----BEGIN ').length - 1, blocks: text.match(/-----BEGIN ([A-Z0-9 ]+)-----[^-]*-----END \1-----/g) ?? [] };
}

/** A file of a certificate or key: the flag that named it, its path and what was read from it. */
export interface NamedFile {
  readonly what: string;
  readonly path: string;
  readonly bytes: Buffer;
}

/**
 * Why OpenSSL refused a certificate and its key, naming the file at fault: one cut short (a copy interrupted, a reload
 * polled while the file was written in place: "bad end line"), a certificate or a key that does not parse, or, both
 * sound, a key that does not go with the certificate. OpenSSL's own error named no file, and every case was reported
 * as the key not going with the certificate, a damaged certificate as "--tls-cert or --tls-ca" (audit, 2026-12-07).
 * Only asked once OpenSSL has refused them, so nothing it takes is refused here.
 */
export function credentialsError(cert: NamedFile, key: NamedFile, error: Error): MercuryError {
  const refused = (file: NamedFile, what: string): MercuryError => new MercuryError('CONFIG_INVALID', `${file.what} ${file.path} ${what}`, { details: { path: file.path } });
  for (const file of [cert, key]) {
    const { begun, blocks } = pemBlocks(file.bytes);
    if (blocks.length < begun) return refused(file, `is cut short: ${begun - blocks.length} of its ${begun} PEM blocks have no END line; give the whole file`);
  }
  try {
    new X509Certificate(cert.bytes);
  } catch (parse) {
    return refused(cert, `is not a PEM certificate (${(parse as Error).message}); give the certificate file`);
  }
  try {
    createPrivateKey(key.bytes);
  } catch (parse) {
    return refused(key, `is not a PEM private key (${(parse as Error).message}); give the certificate's key file`);
  }
  return refused(key, `does not go with ${cert.what} ${cert.path}: ${error.message}`);
}

/** What a node's TLS servers are given: client certificates asked for, checked by the listener (see the header). */
export function serverTlsOptions(material: TlsMaterial): TlsOptions {
  return { cert: material.cert, key: material.key, ca: material.ca, requestCert: true, rejectUnauthorized: false, minVersion: TLS_MIN_VERSION };
}

/** What a node's outgoing connections (replication, forwarding) are given: its own certificate, and the CA. */
export function clientTlsOptions(material: TlsMaterial): { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer; readonly minVersion: 'TLSv1.2' } {
  return { cert: material.cert, key: material.key, ca: material.ca, minVersion: TLS_MIN_VERSION };
}

/**
 * A node's TLS files, reloaded when they change. `current` is what new connections use; listeners registered with
 * `onReload` (the servers' setSecureContext) hear of each successful reload.
 */
export class TlsCredentials {
  private material: TlsMaterial;
  private stamp: string;
  private timer: TimerHandle | undefined;
  private readonly listeners: ((material: TlsMaterial) => void)[] = [];
  /** Every open connection whose peer certificate verified: the listeners and clients hand them to `track`. */
  private readonly verified = new VerifiedConnections();
  reloads = 0;
  reloadFailures = 0;
  /** Connections closed because a new CA file no longer signed their peer's certificate (a counter). */
  closedOnCaChange = 0;
  /** Connections closed because their peer's certificate expired while they were open (a counter). */
  closedOnPeerExpiry = 0;

  constructor(
    readonly paths: TlsPaths,
    private readonly logger: Logger,
    /** Its wall time judges certificates' validity when a CA change re-checks connections, as in a handshake. */
    private readonly clock: Clock = systemClock,
  ) {
    this.stamp = this.fileStamp();
    this.material = readTlsMaterial(paths, this.warnSecret);
  }

  current(): TlsMaterial {
    return this.material;
  }

  onReload(listener: (material: TlsMaterial) => void): void {
    this.listeners.push(listener);
  }

  /**
   * A TLS connection (either direction) whose handshake finished: kept for the re-check of a CA change if verified.
   * Bound, so that listeners and clients are given it as it is.
   */
  readonly track = (socket: TLSSocket): void => this.verified.track(socket);

  private readonly warnSecret: SecretFileWarn = (message, fields) => this.logger.log('warn', message, fields);

  /**
   * Polls the files every `intervalMs` and reloads when one changed; at the same beat, closes the open connections
   * whose peer's certificate expired since their handshake (a handshake checks validity once; stop 38).
   */
  watch(intervalMs = TLS_RELOAD_POLL_MS): void {
    this.timer?.cancel();
    this.timer = this.clock.setInterval(() => {
      const stamp = this.fileStamp();
      if (stamp !== this.stamp) this.reload('files changed');
      this.closeExpired();
    }, intervalMs);
  }

  private closeExpired(): void {
    const closed = this.verified.closeExpired(this.material.authorities, this.clock.nowMs());
    if (closed === 0) return;
    this.closedOnPeerExpiry += closed;
    this.logger.log('warn', 'open connections closed: their peer certificate expired', { closed, kept: this.verified.size });
  }

  /** Reads the files again (SIGHUP, a change seen by `watch`). False, and the old credentials kept, when they are bad. */
  reload(why: string): boolean {
    this.stamp = this.fileStamp();
    let material: TlsMaterial;
    try {
      material = readTlsMaterial(this.paths, this.warnSecret);
    } catch (error) {
      this.reloadFailures++;
      if (isOutOfFiles(error)) {
        // The files may be whole: this process could not open them. Their stamp is forgotten, so the next poll reads
        // them again; it was kept, and a rotated certificate went unread until the files changed once more (audit,
        // 2026-12-08: a node at its open-files limit).
        this.stamp = '';
        this.logger.log('error', 'TLS reload failed: this process has no file descriptor left to read the files with; still using the previous certificate, and trying again at the next poll', {
          why,
          error: (error as Error).message,
        });
        return false;
      }
      this.logger.log('error', 'TLS reload failed; still using the previous certificate', { why, error: (error as Error).message });
      return false;
    }
    const previousCa = this.material.ca;
    this.material = material;
    this.reloads++;
    for (const listener of this.listeners) listener(material);
    this.logger.log('info', 'TLS certificate reloaded', { why, subject: material.subject, validTo: new Date(material.validToMs).toISOString() });
    if (!material.ca.equals(previousCa)) {
      const closed = this.verified.recheck(material.authorities, this.clock.nowMs());
      this.closedOnCaChange += closed;
      this.logger.log(closed > 0 ? 'warn' : 'info', 'the CA file changed: open connections re-checked against it', {
        checked: closed + this.verified.size,
        closed,
        why: 'a peer certificate the new CA does not sign',
      });
    }
    return true;
  }

  close(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** Size, mtime and inode of each file (a changed inode is a symlink or rename swap). */
  private fileStamp(): string {
    return [this.paths.certPath, this.paths.keyPath, this.paths.caPath]
      .map((path) => {
        try {
          const stat = statSync(path);
          return `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  }
}

/** Loopback addresses and `localhost`: where plaintext and no authentication are allowed without `--insecure`. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare === 'localhost' || bare === '::1') return true;
  if (bare.startsWith('::ffff:')) return isLoopbackHost(bare.slice('::ffff:'.length));
  return isIP(bare) === 4 && bare.startsWith('127.');
}

/**
 * Calls `then(firstByteIsTls)` once the first bytes of `socket` arrived, and leaves them unread for whoever takes
 * the socket next (a TLS socket wrapping it reads what the stream holds). Nothing happens if the socket closes first.
 */
export function sniffTls(socket: Socket, then: (tls: boolean) => void): void {
  socket.once('data', (chunk: Buffer) => {
    socket.pause();
    socket.unshift(chunk);
    then(chunk[0] === TLS_HANDSHAKE_BYTE);
  });
}

/**
 * The verified client certificate's subject CN on a TLS socket, `undefined` without one; `error` says why a
 * certificate that was presented is not trusted (the OpenSSL code: CERT_HAS_EXPIRED, UNABLE_TO_VERIFY_LEAF_SIGNATURE).
 */
export function peerCertificate(socket: TLSSocket): PeerCertificate {
  let peer = peerCertificates.get(socket);
  if (peer === undefined) {
    peer = readPeerCertificate(socket);
    peerCertificates.set(socket, peer);
  }
  return peer;
}

export interface PeerCertificate {
  readonly name: string | undefined;
  readonly error: string | undefined;
}

/** Read once per connection: the certificate cannot change within one, and getPeerCertificate builds a new object each call. */
const peerCertificates = new WeakMap<TLSSocket, PeerCertificate>();

function readPeerCertificate(socket: TLSSocket): PeerCertificate {
  const certificate = socket.getPeerCertificate();
  const presented = certificate !== null && typeof certificate === 'object' && Object.keys(certificate).length > 0;
  if (!presented) return { name: undefined, error: undefined };
  if (!socket.authorized) return { name: undefined, error: String(socket.authorizationError ?? 'not verified') };
  // A subject with several CNs gives an array at run time, whatever the type says.
  const cn: unknown = certificate.subject?.CN;
  return { name: Array.isArray(cn) ? String(cn[0]) : typeof cn === 'string' ? cn : undefined, error: undefined };
}

/**
 * The subject CN of the verified client certificate this request came with (TLS only), or undefined: no TLS, no
 * certificate, or one the CA did not sign. src/auth maps it to a principal; nothing else may trust a peer's name.
 */
export function clientCertificateName(req: IncomingMessage): string | undefined {
  const socket = req.socket as TLSSocket;
  return socket.encrypted === true ? peerCertificate(socket).name : undefined;
}

/** What a node logs for a failed handshake: the error, and for the common case of an abort, its likely cause. */
export function tlsFailureMessage(reason: string, error: Error): string {
  if (reason !== 'aborted') return `TLS handshake failed: ${error.message}`;
  return `the peer closed the connection during the TLS handshake (${error.message}); a client that does not trust this node's certificate does that: it must use the cluster CA`;
}

/** A short, stable label for a failed TLS handshake (metrics), from the error OpenSSL gave. */
export function tlsFailureReason(error: Error & { code?: string }): string {
  const text = `${error.code ?? ''} ${error.message}`.toLowerCase();
  if (text.includes('unknown ca') || text.includes('unable to verify') || text.includes('self-signed') || text.includes('self signed')) return 'untrusted_certificate';
  if (text.includes('expired')) return 'certificate_expired';
  if (text.includes('http request') || text.includes('wrong version number') || text.includes('unknown protocol')) return 'not_tls';
  if (text.includes('bad certificate') || text.includes('certificate')) return 'bad_certificate';
  // Node's TLS client closes without an alert when it does not trust the server's certificate: this is what a client
  // without the cluster CA looks like from the server (and also any peer that goes away mid-handshake).
  if (text.includes('econnreset') || text.includes('socket hang up')) return 'aborted';
  if (text.includes('timeout')) return 'timeout';
  return 'handshake_failed';
}
