/**
 * Certificates for a Mercury cluster, made with Debian's `openssl` command (docs/dependencies.md says why not an npm
 * library): a cluster CA, and certificates it signs for nodes and clients. The demo (`npm start`) and the tests use
 * it; production clusters bring certificates from their own PKI.
 *
 * Keys are ECDSA P-256 (fast to make and to handshake with). Every certificate carries both extended key usages,
 * serverAuth and clientAuth: a node is a TLS server for its children and HTTP clients, and a TLS client of its
 * upstream (mutual TLS) and of the root's HTTP API (write forwarding). Key files are written 0600.
 *
 * Every file is written here, by writeFileDurably, never by openssl: keys come from node:crypto, and openssl prints
 * what it makes on its standard output. openssl does not check its own writes: on a full disk it exited 0 leaving an
 * empty CSR, or failed with a bare "ENOSPC ... write" from the file written before it (`mercury demo` on a full disk;
 * audit, 2026-12-07). Now a full disk is STORAGE_FULL naming the file, and a file is whole or as it was.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { writeFileDurably } from '../fs/durable.js';
import { makeDirectories } from '../fs/make-directories.js';

export interface CertificateFiles {
  /** PEM certificate. */
  readonly certPath: string;
  /** PEM private key (0600). */
  readonly keyPath: string;
}

export interface IssueOptions {
  /** Subject CN: the name an HTTP client certificate maps to (src/auth), and how logs name a peer. */
  readonly commonName: string;
  /** Host names and IP addresses the certificate is valid for (subjectAltName); empty for a client certificate. */
  readonly hosts?: readonly string[];
  /** Validity in days from now; negative makes a certificate that has already expired (tests). */
  readonly days?: number;
}

const DAYS_DEFAULT = 825;
/**
 * One openssl run takes milliseconds. The files it reads and writes are in a directory others may write (the demo's
 * ./data/demo/tls): a FIFO planted at a key's name blocked openssl, and with it the demo, for ever.
 */
const OPENSSL_TIMEOUT_MS = 20_000;

/** What openssl printed on its standard output (a PEM), given `input` on its standard input. */
function openssl(args: readonly string[], input?: Buffer): Buffer {
  let output: Buffer;
  try {
    output = execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'], timeout: OPENSSL_TIMEOUT_MS, killSignal: 'SIGKILL' });
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: Buffer };
    if (failure.code === 'ENOENT') throw new Error('the openssl command is not installed; install it (Debian: apt-get install openssl) to make certificates');
    if (failure.code === 'ETIMEDOUT')
      throw new Error(
        `openssl ${args[0]} did not finish within ${OPENSSL_TIMEOUT_MS / 1000} s: one of the files it reads or writes (${args.filter((arg) => arg.endsWith('.pem')).join(', ')}) is not a regular file (a FIFO?); remove it, or the directory it is in, and try again`,
      );
    throw new Error(`openssl ${args[0]} failed: ${failure.stderr?.toString().trim() ?? failure.message}`);
  }
  if (output.length === 0) throw new Error(`openssl ${args[0]} printed nothing`);
  return output;
}

/** A new ECDSA P-256 key (PKCS#8 PEM, as `openssl req -newkey ec -nodes` wrote it) in `keyPath`, 0600. */
function writeKey(keyPath: string): void {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileDurably(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), 0o600);
}

/** A self-signed CA (`name`.pem and `name`-key.pem in `dir`). */
export function createCertificateAuthority(dir: string, name: string, commonName = `${name} CA`, days = DAYS_DEFAULT): CertificateFiles {
  makeDirectories(dir);
  const files = { certPath: join(dir, `${name}.pem`), keyPath: join(dir, `${name}-key.pem`) };
  const ca = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
  writeKey(files.keyPath);
  const certificate = openssl(['req', '-x509', '-new', '-key', files.keyPath, '-days', String(days), '-subj', `/CN=${commonName}`, '-config', emptyConfig(dir), ...ca]);
  writeFileDurably(files.certPath, certificate, 0o644);
  return files;
}

/** `openssl req` insists on a config file: a minimal one keeps the system's defaults (and their extensions) out. */
function emptyConfig(dir: string): string {
  const path = join(dir, 'openssl.cnf');
  if (!existsSync(path)) writeFileDurably(path, '[req]\ndistinguished_name=dn\n[dn]\n', 0o644);
  return path;
}

/** A certificate signed by `ca` (`name`.pem and `name`-key.pem in `dir`). */
export function issueCertificate(ca: CertificateFiles, dir: string, name: string, options: IssueOptions): CertificateFiles {
  makeDirectories(dir);
  const files = { certPath: join(dir, `${name}.pem`), keyPath: join(dir, `${name}-key.pem`) };
  const extPath = join(dir, `${name}.ext`);
  const hosts = options.hosts ?? [];
  const altNames = hosts.map((host) => (isIP(host) === 0 ? `DNS:${host}` : `IP:${host}`));
  writeFileDurably(
    extPath,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth,clientAuth',
      ...(altNames.length > 0 ? [`subjectAltName=${altNames.join(',')}`] : []),
    ].join('\n') + '\n',
    0o644,
  );
  try {
    writeKey(files.keyPath);
    const request = openssl(['req', '-new', '-key', files.keyPath, '-subj', `/CN=${options.commonName}`, '-config', emptyConfig(dir)]);
    // A random serial: two certificates for the same name (a reload in a test, a re-issued node certificate) differ.
    const certificate = openssl(
      ['x509', '-req', '-CA', ca.certPath, '-CAkey', ca.keyPath, '-set_serial', `0x${randomSerialHex()}`, '-days', String(options.days ?? DAYS_DEFAULT), '-extfile', extPath],
      request,
    );
    writeFileDurably(files.certPath, certificate, 0o644);
  } finally {
    rmSync(extPath, { force: true });
  }
  return files;
}

/** 16 random bytes with the top bit clear (a serial is a positive integer). */
function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}
