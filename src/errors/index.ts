/**
 * The node's errors: the codes, their HTTP statuses and `MercuryError` are a wire contract and live in
 * src/api/errors.ts; this module re-exports them for the node's own folders.
 */
import { isMercuryError, type MercuryError } from '../api/errors.js';

export { ERROR_STATUS, ErrorCode, MercuryError, isMercuryError, valueTooLarge } from '../api/errors.js';

/**
 * Damaged data met while serving (see src/store/health.ts): the reader that met it fails, the node goes on. Watches
 * and child sessions test for it to end only themselves.
 */
export function isDataCorrupted(error: unknown): error is MercuryError {
  return isMercuryError(error) && error.code === 'DATA_CORRUPTED';
}
