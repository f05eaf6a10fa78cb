/**
 * Real certificates for TLS tests, made with openssl (src/net/tls-certs.ts) once per test process in a temp
 * directory (removed at exit): a cluster CA with node and client certificates, an expired node and client
 * certificate, and a second CA with its own node and client certificates (the "wrong CA").
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TlsPaths } from '../../src/net/index.js';
import { createCertificateAuthority, issueCertificate, type CertificateFiles } from '../../src/net/tls-certs.js';

export interface TestCertificates {
  readonly dir: string;
  readonly ca: CertificateFiles;
  /** CN "node", valid for 127.0.0.1, ::1 and localhost. */
  readonly node: CertificateFiles;
  /** CN "alice": a client certificate. */
  readonly client: CertificateFiles;
  /** Signed by the cluster CA, expired yesterday. */
  readonly expiredNode: CertificateFiles;
  readonly expiredClient: CertificateFiles;
  /** Another CA, and certificates it signed. */
  readonly otherCa: CertificateFiles;
  readonly otherNode: CertificateFiles;
  readonly otherClient: CertificateFiles;
}

export const LOOPBACK_HOSTS = ['127.0.0.1', '::1', 'localhost'];

let cached: TestCertificates | undefined;

export function testCertificates(): TestCertificates {
  if (cached !== undefined) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'mercury-certs-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const ca = createCertificateAuthority(dir, 'ca', 'Mercury test CA');
  const otherCa = createCertificateAuthority(dir, 'other-ca', 'Some other CA');
  cached = {
    dir,
    ca,
    node: issueCertificate(ca, dir, 'node', { commonName: 'node', hosts: LOOPBACK_HOSTS }),
    client: issueCertificate(ca, dir, 'client', { commonName: 'alice' }),
    expiredNode: issueCertificate(ca, dir, 'expired-node', { commonName: 'node', hosts: LOOPBACK_HOSTS, days: -1 }),
    expiredClient: issueCertificate(ca, dir, 'expired-client', { commonName: 'alice', days: -1 }),
    otherCa,
    otherNode: issueCertificate(otherCa, dir, 'other-node', { commonName: 'node', hosts: LOOPBACK_HOSTS }),
    otherClient: issueCertificate(otherCa, dir, 'other-client', { commonName: 'mallory' }),
  };
  return cached;
}

/** The node's `--tls-*` files: `certificate` (default the valid node certificate) with the cluster CA. */
export function tlsPaths(certificate: CertificateFiles = testCertificates().node, ca: CertificateFiles = testCertificates().ca): TlsPaths {
  return { certPath: certificate.certPath, keyPath: certificate.keyPath, caPath: ca.certPath };
}

/** The client options for `connect`: the cluster CA, and a client certificate when given. */
export function clientTls(certificate?: CertificateFiles, ca: CertificateFiles = testCertificates().ca): { ca: Buffer; cert?: Buffer; key?: Buffer } {
  return {
    ca: readFileSync(ca.certPath),
    ...(certificate === undefined ? {} : { cert: readFileSync(certificate.certPath), key: readFileSync(certificate.keyPath) }),
  };
}
