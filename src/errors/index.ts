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

/**
 * A read that found no free reader (LMDB's table full, src/store/health.ts readersFull): the reads holding the slots
 * end, so a watch or a child session tries again later instead of failing.
 */
export function isReadersFull(error: unknown): error is MercuryError {
  return isMercuryError(error) && error.code === 'OVERLOADED' && error.details?.reason === 'READERS_FULL';
}
