export { loadOrCreateSigningKey, readSigningKey, readTrustKey, SIGNING_KEY_FILE, SIGNING_PUBLIC_KEY_FILE } from './keys.js';
export { HEARTBEAT_EPOCH_BYTES, Signer, entrySignedMessage, heartbeatSignedMessage, keyId, publicKeyFromRaw, rawPublicKey, snapshotPartSignedMessage, snapshotSignedMessage, verifies, PUBLIC_KEY_BYTES } from './signatures.js';
export type { SignedBeat, SnapshotHead, SnapshotPart } from './signatures.js';
export { BACKWARD_VERIFY_MAX, ROOT_KEY_KEY, ROOT_KEYS_PREFIX, ROOT_URL_KEY, TrustedKeys, rotationKeyOf } from './trusted-keys.js';
export type { BatchVerdict, TrustRefusal, TrustRefusalCode } from './trusted-keys.js';
