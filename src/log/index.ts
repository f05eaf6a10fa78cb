export {
  ENTRY_FORMAT,
  HASH_BYTES,
  GENESIS_HASH,
  GENESIS_HEAD,
  ChainError,
  EntryDecodeError,
  decodeEntry,
  opEncodedBytes,
  sealEntry,
  verifyNext,
  verifySelf,
} from './entry.js';
export type { ChainHead, EncodedEntry, Entry, EntryBody, Op } from './entry.js';
