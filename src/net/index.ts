/** Connection admission shared by the listeners (HTTP, replication): per-address slots and shares of budgets; TLS for every connection. */
export { AddressSlots, addressKey, hostSlotKey, remoteLabel } from './address-slots.js';
export { Handshakes } from './handshakes.js';
export { AddressShares } from './address-shares.js';
export {
  TLS_HANDSHAKE_BYTE,
  TLS_RELOAD_POLL_MS,
  TlsCredentials,
  clientCertificateName,
  clientTlsOptions,
  isLoopbackHost,
  peerCertificate,
  readTlsMaterial,
  serverTlsOptions,
  sniffTls,
  tlsFailureMessage,
  tlsFailureReason,
  type PeerCertificate,
  type TlsMaterial,
  type TlsPaths,
} from './tls.js';
