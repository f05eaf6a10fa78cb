/**
 * TLS on the client side: the `ca`, `cert` and `key` options (PEM text or bytes, as node:tls takes them), and what
 * a failed handshake means for the person who runs the client. Every message names what to change.
 */

/** TLS options of a client: trust `ca` (the cluster CA) and, for mutual TLS, present `cert` with its `key`. */
export interface ClientTls {
  /** PEM of the CA(s) that sign the nodes' certificates; without it, the system's public CAs. */
  readonly ca?: string | Buffer;
  /** PEM client certificate, presented to nodes that ask (the node maps its subject CN to a principal). */
  readonly cert?: string | Buffer;
  /** PEM private key of `cert`. */
  readonly key?: string | Buffer;
}

/** Certificate checks that failed on this side: no byte of a request was sent, so a write may be retried. */
export const TLS_VERIFY_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
]);

const UNTRUSTED = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT']);

/**
 * What to do about a connection error, when it is about TLS; undefined otherwise. `secure` says whether this side
 * spoke TLS (a reset during a handshake means something else than a reset of plaintext).
 */
export function tlsErrorHint(error: { code?: unknown; message?: unknown }, secure: boolean): string | undefined {
  const code = typeof error.code === 'string' ? error.code : '';
  const message = typeof error.message === 'string' ? error.message : '';
  if (UNTRUSTED.has(code))
    return "the node's certificate is not signed by a CA this client trusts: pass the cluster CA (mercury --ca CA.pem or MERCURY_CA, the client's `ca` option, a node's --tls-ca)";
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    return "the node's certificate is outside its validity period: renew it on the node (it reloads the files without a restart) or check the clocks";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return "the node's certificate does not name the host this client dialled: use a name or address the certificate lists";
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' || /wrong version number|packet length too long/.test(message))
    return 'the node does not speak TLS on this port: use an http:// URL, or start the node with --tls-cert, --tls-key and --tls-ca';
  if (/alert (certificate expired|bad certificate|unknown ca|certificate required)/i.test(message))
    return 'the node refused this client certificate: present one signed by the cluster CA (--cert/--key)';
  if (secure && (code === 'ECONNRESET' || /before secure TLS connection was established|socket hang up/.test(message)))
    return 'the connection closed during the TLS handshake: the node may not serve TLS on this port (use http://), or it refused this certificate';
  return undefined;
}
