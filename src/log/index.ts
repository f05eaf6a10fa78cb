export {
  AUTHOR_BYTES_MAX,
  ENTRY_FORMAT,
  SIGNATURE_BYTES,
  authorRuns,
  opAuthors,
  resignRecord,
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
export type { AuthorRun, ChainHead, EncodedEntry, Entry, EntryBody, Op } from './entry.js';
