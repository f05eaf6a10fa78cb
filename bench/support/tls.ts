/**
 * `--tls` for the benchmarks: a CA and one node certificate (127.0.0.1, localhost) made with openssl in `dir`, the
 * `mercury serve` flags that use them, and the CA for the load generators. Every node of a benchmark shares the one
 * certificate: the handshake and record costs are the same as with one per node.
 */
import { readFileSync } from 'node:fs';
import type { TlsPaths } from '../../src/net/index.js';
import { createCertificateAuthority, issueCertificate } from '../../src/net/tls-certs.js';

export interface BenchTls {
  /** `--tls-cert F --tls-key F --tls-ca F`. */
  readonly args: readonly string[];
  /** The same files, for nodes started in-process. */
  readonly paths: TlsPaths;
  /** PEM of the CA, for clients. */
  readonly ca: Buffer;
}

export function benchTls(dir: string): BenchTls {
  const ca = createCertificateAuthority(dir, 'ca', 'Mercury bench CA');
  const node = issueCertificate(ca, dir, 'node', { commonName: 'bench-node', hosts: ['127.0.0.1', 'localhost'] });
  const paths = { certPath: node.certPath, keyPath: node.keyPath, caPath: ca.certPath };
  return { args: ['--tls-cert', paths.certPath, '--tls-key', paths.keyPath, '--tls-ca', paths.caPath], paths, ca: readFileSync(ca.certPath) };
}
