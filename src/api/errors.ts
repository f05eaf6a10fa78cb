/**
 * Error codes that a client or a peer sees on the wire, in one table each. Part of the API: clients and peers switch
 * on these codes, so a code is never renamed or reused.
 *
 * - `ErrorCode` and `ERROR_STATUS`: what the HTTP API answers. Each code maps to one HTTP status; the HTTP layer
 *   consults only this table. The JSON body is `{"error":{"code","message",...details}}`.
 * - `RefuseReason` and `ProtocolErrorCode`: what a replication peer sends in a REFUSE frame or logs when the other
 *   side breaks the protocol (the framing itself is specified in src/replication/protocol.ts).
 *
 * Bugs are not errors: they are `node:assert` failures and crash the process.
 */

export const ErrorCode = {
  BAD_REQUEST: 'BAD_REQUEST',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  HEADERS_TOO_LARGE: 'HEADERS_TOO_LARGE',
  EXPECTATION_FAILED: 'EXPECTATION_FAILED',
  INVALID_JSON: 'INVALID_JSON',
  INVALID_UTF8: 'INVALID_UTF8',
  LONE_SURROGATE: 'LONE_SURROGATE',
  JSON_TOO_DEEP: 'JSON_TOO_DEEP',
  JSON_TOO_MANY_ELEMENTS: 'JSON_TOO_MANY_ELEMENTS',
  JSON_STRING_TOO_LONG: 'JSON_STRING_TOO_LONG',
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  KEY_TOO_LARGE: 'KEY_TOO_LARGE',
  KEY_EMPTY: 'KEY_EMPTY',
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  TOO_MANY_OPS: 'TOO_MANY_OPS',
  RANGE_DELETE_TOO_LARGE: 'RANGE_DELETE_TOO_LARGE',
  COMPARE_READ_TOO_LARGE: 'COMPARE_READ_TOO_LARGE',
  BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  HOST_NOT_ALLOWED: 'HOST_NOT_ALLOWED',
  ORIGIN_NOT_ALLOWED: 'ORIGIN_NOT_ALLOWED',
  KEY_NOT_FOUND: 'KEY_NOT_FOUND',
  NOT_FOUND: 'NOT_FOUND',
  METHOD_NOT_ALLOWED: 'METHOD_NOT_ALLOWED',
  /** A plain request on a WebSocket endpoint (`/v1/watch`): the answer carries `Upgrade: websocket`. */
  UPGRADE_REQUIRED: 'UPGRADE_REQUIRED',
  COMPARE_FAILED: 'COMPARE_FAILED',
  SEQ_NOT_RETAINED: 'SEQ_NOT_RETAINED',
  SEQ_WAIT_TIMEOUT: 'SEQ_WAIT_TIMEOUT',
  REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  OVERLOADED: 'OVERLOADED',
  BODY_BUDGET_EXCEEDED: 'BODY_BUDGET_EXCEEDED',
  /** Retired: no node sends it since replicas forward writes (kept so that the code is never reused; clients map it as a 503). */
  READ_ONLY: 'READ_ONLY',
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  UPSTREAM_UNAVAILABLE: 'UPSTREAM_UNAVAILABLE',
  ROOT_UNKNOWN: 'ROOT_UNKNOWN',
  REPLICA_DIVERGED: 'REPLICA_DIVERGED',
  NOT_A_REPLICA: 'NOT_A_REPLICA',
  RESYNC_IN_PROGRESS: 'RESYNC_IN_PROGRESS',
  RESYNC_STALLED: 'RESYNC_STALLED',
  CHAIN_INVALID: 'CHAIN_INVALID',
  DATA_DIR_INVALID: 'DATA_DIR_INVALID',
  DATA_DIR_LOCKED: 'DATA_DIR_LOCKED',
  DATA_DIR_NOT_EMPTY: 'DATA_DIR_NOT_EMPTY',
  SYMLINK_REFUSED: 'SYMLINK_REFUSED',
  /** `mercury sync`: a write would take DIR past --max-files or --max-bytes (src/sync/budget.ts). */
  SYNC_LIMIT_EXCEEDED: 'SYNC_LIMIT_EXCEEDED',
  SNAPSHOT_INVALID: 'SNAPSHOT_INVALID',
  /** `mercury snapshot save`: the node sent the snapshot slower than any real link would (src/cli/transfer-pace.ts). */
  SNAPSHOT_STALLED: 'SNAPSHOT_STALLED',
  DATA_CORRUPTED: 'DATA_CORRUPTED',
  STORAGE_FULL: 'STORAGE_FULL',
  STORAGE_IO_ERROR: 'STORAGE_IO_ERROR',
  CONFIG_INVALID: 'CONFIG_INVALID',
  /** `mercury serve`: a listener could not start (its address in use, not this host's, a name that does not resolve). */
  LISTEN_FAILED: 'LISTEN_FAILED',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  /** `mercury token create --subject S` where a grant names S already (a subject named twice authenticates nothing). */
  SUBJECT_ALREADY_GRANTED: 'SUBJECT_ALREADY_GRANTED',
  /** `mercury token create NAME` where a token or grant is named NAME already (the audit log records names). */
  TOKEN_NAME_TAKEN: 'TOKEN_NAME_TAKEN',
  /** `mercury token revoke ID` of the only admin credential left: nobody could manage tokens after it. */
  LAST_ADMIN_TOKEN: 'LAST_ADMIN_TOKEN',
  /** A replica refuses to forward a write whose caller proved itself only by client certificate (it cannot show that upstream). */
  CERTIFICATE_NOT_FORWARDED: 'CERTIFICATE_NOT_FORWARDED',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** HTTP status for each code. */
export const ERROR_STATUS: Readonly<Record<ErrorCode, number>> = Object.freeze({
  BAD_REQUEST: 400,
  PERMISSION_DENIED: 403,
  HEADERS_TOO_LARGE: 431,
  EXPECTATION_FAILED: 417,
  INVALID_JSON: 400,
  INVALID_UTF8: 400,
  LONE_SURROGATE: 400,
  JSON_TOO_DEEP: 400,
  JSON_TOO_MANY_ELEMENTS: 413,
  JSON_STRING_TOO_LONG: 413,
  INVALID_ARGUMENT: 400,
  KEY_TOO_LARGE: 413,
  KEY_EMPTY: 400,
  VALUE_TOO_LARGE: 413,
  TOO_MANY_OPS: 413,
  RANGE_DELETE_TOO_LARGE: 413,
  COMPARE_READ_TOO_LARGE: 413,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  HOST_NOT_ALLOWED: 403,
  ORIGIN_NOT_ALLOWED: 403,
  KEY_NOT_FOUND: 404,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  UPGRADE_REQUIRED: 426,
  COMPARE_FAILED: 412,
  SEQ_NOT_RETAINED: 410,
  SEQ_WAIT_TIMEOUT: 504,
  REQUEST_TIMEOUT: 408,
  OVERLOADED: 503,
  BODY_BUDGET_EXCEEDED: 503,
  READ_ONLY: 503,
  SHUTTING_DOWN: 503,
  UPSTREAM_UNAVAILABLE: 503,
  ROOT_UNKNOWN: 503,
  // Not 503: the write was committed at the root, and a client must not send it again elsewhere as if it had not been.
  REPLICA_DIVERGED: 502,
  NOT_A_REPLICA: 409,
  RESYNC_IN_PROGRESS: 409,
  RESYNC_STALLED: 504,
  CHAIN_INVALID: 500,
  DATA_DIR_INVALID: 500,
  DATA_DIR_LOCKED: 409,
  DATA_DIR_NOT_EMPTY: 409,
  SYMLINK_REFUSED: 409,
  SYNC_LIMIT_EXCEEDED: 507,
  SNAPSHOT_INVALID: 422,
  SNAPSHOT_STALLED: 504,
  DATA_CORRUPTED: 500,
  STORAGE_FULL: 507,
  STORAGE_IO_ERROR: 500,
  CONFIG_INVALID: 400,
  // Never answered: a node that cannot listen does not start.
  LISTEN_FAILED: 500,
  UNAUTHENTICATED: 401,
  SUBJECT_ALREADY_GRANTED: 409,
  TOKEN_NAME_TAKEN: 409,
  LAST_ADMIN_TOKEN: 409,
  CERTIFICATE_NOT_FORWARDED: 403,
  INTERNAL: 500,
});

export class MercuryError extends Error {
  readonly code: ErrorCode;
  /** Extra machine-readable fields returned beside code and message (for example the current modSeq). */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MercuryError';
    this.code = code;
    this.details = options?.details;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

export function isMercuryError(error: unknown): error is MercuryError {
  return error instanceof MercuryError;
}

/**
 * The one VALUE_TOO_LARGE: a value of `bytes` bytes where this node accepts at most `limit` (its `--max-value-bytes`).
 * `what` names the field (`success[3].value` in a transaction of thousands of ops).
 */
export function valueTooLarge(bytes: number, limit: number, what = 'value'): MercuryError {
  return new MercuryError('VALUE_TOO_LARGE', `${what} is ${bytes} bytes; this node accepts at most ${limit} bytes (server option --max-value-bytes)`, {
    details: { limit },
  });
}

/** Why a replication upstream refused a child. Stable: the codes travel on the wire (REFUSE) and appear in status and logs. */
export const RefuseReason = {
  DATASET_MISMATCH: 1,
  CHAIN_DIVERGED: 2,
  LOOP: 3,
  SELF: 4,
  PROTOCOL_VERSION: 5,
  BEHIND: 6,
  UNAVAILABLE: 7,
  PATH_TOO_LONG: 8,
  PROTOCOL_ERROR: 9,
  /**
   * The child did not authenticate: TLS is required on this port and it did not use it, or its certificate is not
   * signed by the cluster CA; or HELLO carried no credential, or one this node does not know (malformed, unknown,
   * revoked); or its token was revoked while streaming.
   */
  UNAUTHENTICATED: 10,
  /** The credential is valid but lacks the `replicate` scope. */
  PERMISSION_DENIED: 11,
  /** Sent by a child with trusted keys: an entry or a snapshot carried no signature where one was needed. */
  SIGNATURE_MISSING: 12,
  /** Sent by a child with trusted keys: a signature did not verify with any key it trusts. */
  SIGNATURE_INVALID: 13,
  /**
   * A relay that stopped following (its own chain diverged from its upstream's) cannot serve this child, and has no
   * opinion about the child's chain: the child asks for a snapshot, or its head is not the one the relay held when it
   * diverged, so the verdict the relay received says nothing about the child (one behind the fork point shares both
   * histories). The child counts it as an abstention, never as a vote that its chain diverged, and tries its next
   * upstream. A child streaming from exactly that head is refused CHAIN_DIVERGED instead. Added within protocol
   * version 5: a child that does not know the code fails to decode the REFUSE (MESSAGE_MALFORMED), which drops the
   * upstream like any failure and never stops it.
   */
  UPSTREAM_DIVERGED: 14,
} as const;
export type RefuseReason = keyof typeof RefuseReason;

/** What a replication peer can get wrong on the wire. Stable codes: they appear in logs and in REFUSE messages. */
export const ProtocolErrorCode = {
  FRAME_TOO_LARGE: 'FRAME_TOO_LARGE',
  FRAME_MALFORMED: 'FRAME_MALFORMED',
  FRAME_CHECKSUM: 'FRAME_CHECKSUM',
  MESSAGE_UNKNOWN: 'MESSAGE_UNKNOWN',
  MESSAGE_MALFORMED: 'MESSAGE_MALFORMED',
  MESSAGE_UNEXPECTED: 'MESSAGE_UNEXPECTED',
  VERSION_UNSUPPORTED: 'VERSION_UNSUPPORTED',
} as const;
export type ProtocolErrorCode = (typeof ProtocolErrorCode)[keyof typeof ProtocolErrorCode];
