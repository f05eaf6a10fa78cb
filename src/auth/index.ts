/**
 * Authorization: bearer tokens with scopes, stored as hashes in the reserved key space and replicated through the
 * log (token.ts format, records.ts storage, registry.ts what a node knows, scopes.ts the checks, guard.ts the doors,
 * admin.ts token management as writes, bootstrap.ts the first admin token). The threat model: docs/security.md.
 */
export {
  adminKeptAfter,
  createTokenRequest,
  indexedName,
  requireAdminKept,
  requireNamesKept,
  revokeTokenRequest,
  tokenInfo,
  tokenNameTaken,
  touchesReserved,
  validateReservedOps,
  type CreateTokenInput,
  type ReadKey,
} from './admin.js';
export { BOOTSTRAP_TOKEN_FILE, bootstrapAdmin, readTokenFile, tokenFileText, writeTokenFile } from './bootstrap.js';
export { AUTH_MODES, AuthGuard, peerCertificateSubject, type AuthMode } from './guard.js';
export { TOKEN_EXPIRES_IN_MS_MAX, TOKEN_EXPIRES_IN_MS_MIN, TOKEN_KEY_PREFIX, decodeTokenRecord, encodeTokenRecord, tokenKey, tokenNameKey, type TokenRecord } from './records.js';
export { TokenRegistry, type ReadTokenRecords } from './registry.js';
export {
  formatScopes,
  parseScopes,
  refuseReserved,
  requireAdmin,
  seesChain,
  requireRead,
  requireReadPrefix,
  requireReplicate,
  requireSomeKeyScope,
  requireSomeWriteScope,
  requireTxn,
  requireWrite,
  requireWriteRange,
  type Principal,
  type Scopes,
} from './scopes.js';
export { AUTHORIZATION_HEADER_CHARS_MAX, TOKEN_CHARS, generateToken, isTokenId, parseToken } from './token.js';
