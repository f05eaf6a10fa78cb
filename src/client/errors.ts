/**
 * What the client throws. Two families:
 *
 * - A node answered with an error: a `MercuryError` subclass per condition, with the server's stable `code`, the
 *   HTTP `status` it answered, and `details` (the extra fields of the error body). Switch on the class or the code.
 *   A code this client does not know (a newer node's) is `UnknownCodeError`, with the node's code as it came.
 * - No answer: `UnavailableError` (one node could not be reached or did not answer; `requestSent` says whether the
 *   request may have reached it; its subclass `InvalidAnswerError`: the node answered something that is not a Mercury
 *   answer), `NoNodeReachableError` (every attempt at every URL failed), and
 *   `OutcomeUnknownError` (a write was sent but no answer came: it may or may not have been applied).
 */
import { ErrorCode, MercuryError } from '../api/index.js';
import { ERROR_CODE_CHARS_MAX, ERROR_MESSAGE_CHARS_MAX } from './limits.js';

/** Options shared by the typed server errors. */
export interface ServerErrorOptions {
  readonly status: number;
  readonly details?: Record<string, unknown>;
  readonly cause?: unknown;
  /** The answer's Retry-After in ms, when it carried one in seconds. */
  readonly retryAfterMs?: number;
}

/** An error answered by a node. `status` is the HTTP status the node answered with. */
export class ServerError extends MercuryError {
  readonly httpStatus: number;
  /** How long the node asked the client to wait before it tries again (its Retry-After), when it said. */
  readonly retryAfterMs: number | undefined;
  constructor(code: ErrorCode, message: string, options: ServerErrorOptions) {
    super(code, message, { cause: options.cause, details: options.details });
    this.name = 'ServerError';
    this.httpStatus = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }

  override get status(): number {
    return this.httpStatus;
  }

  /** A numeric field of the error body (`limit`, `modSeq`, `firstSeq`, ...), when the node sent one. */
  protected detailNumber(name: string): number | undefined {
    const value = this.details?.[name];
    return typeof value === 'number' ? value : undefined;
  }
}

/** 400, 415: the request breaks a rule (the message names the field). Retrying it unchanged fails again. */
export class InvalidRequestError extends ServerError {
  override readonly name = 'InvalidRequestError';
}

/** 413: a key, value, op count or body exceeded a limit; `limit` is the limit when the node said. */
export class LimitExceededError extends ServerError {
  override readonly name = 'LimitExceededError';
  get limit(): number | undefined {
    return this.detailNumber('limit');
  }
}

/** 404: no such key (only from calls that do not map it to `undefined`) or no such route. */
export class NotFoundError extends ServerError {
  override readonly name = 'NotFoundError';
}

/** 412: `ifModSeq` did not match; `modSeq` is the key's current modSeq (0: absent). */
export class CompareFailedError extends ServerError {
  override readonly name = 'CompareFailedError';
  get modSeq(): number | undefined {
    return this.detailNumber('modSeq');
  }
}

/** 410: a log read below the retained log; `firstSeq` is the first seq the node still holds. */
export class SeqNotRetainedError extends ServerError {
  override readonly name = 'SeqNotRetainedError';
  get firstSeq(): number | undefined {
    return this.detailNumber('firstSeq');
  }
}

/** 504: a read with `minSeq` timed out before the node applied that seq. */
export class SeqWaitTimeoutError extends ServerError {
  override readonly name = 'SeqWaitTimeoutError';
}

/** 503: the node refused for now (`OVERLOADED`, `BODY_BUDGET_EXCEEDED`, `SHUTTING_DOWN`, `READ_ONLY`, `UPSTREAM_UNAVAILABLE`, `ROOT_UNKNOWN`). */
export class NodeUnavailableError extends ServerError {
  override readonly name = 'NodeUnavailableError';
}

/** 408, 5xx other than the above: the node failed the request. */
export class NodeFailedError extends ServerError {
  override readonly name = 'NodeFailedError';
}

/**
 * An error answer whose code this client does not know: a newer node added it. `code` is the node's code as it sent
 * it (a string outside this client's `ErrorCode`), `status` its HTTP status (500 over the wire port, which sends no
 * status), and `message` its message: a newer client would have a class for it, this one shows what was answered.
 */
export class UnknownCodeError extends ServerError {
  override readonly name = 'UnknownCodeError';
}

/** 401 `UNAUTHENTICATED`: no token, or a malformed, unknown or revoked one (the message says which). */
export class UnauthenticatedError extends ServerError {
  override readonly name = 'UnauthenticatedError';
}

/** 403 `PERMISSION_DENIED`: the token is valid but lacks a scope; the message names the scope and prefix missing. */
export class PermissionDeniedError extends ServerError {
  override readonly name = 'PermissionDeniedError';
}

type ServerErrorClass = new (code: ErrorCode, message: string, options: ServerErrorOptions) => ServerError;

const CLASS_BY_CODE: Partial<Record<ErrorCode, ServerErrorClass>> = {
  BAD_REQUEST: InvalidRequestError,
  UNAUTHENTICATED: UnauthenticatedError,
  PERMISSION_DENIED: PermissionDeniedError,
  CERTIFICATE_NOT_FORWARDED: PermissionDeniedError,
  SUBJECT_ALREADY_GRANTED: InvalidRequestError,
  TOKEN_NAME_TAKEN: InvalidRequestError,
  LAST_ADMIN_TOKEN: InvalidRequestError,
  HEADERS_TOO_LARGE: LimitExceededError,
  EXPECTATION_FAILED: InvalidRequestError,
  INVALID_JSON: InvalidRequestError,
  INVALID_UTF8: InvalidRequestError,
  LONE_SURROGATE: InvalidRequestError,
  JSON_TOO_DEEP: InvalidRequestError,
  JSON_TOO_MANY_ELEMENTS: LimitExceededError,
  JSON_STRING_TOO_LONG: LimitExceededError,
  INVALID_ARGUMENT: InvalidRequestError,
  KEY_EMPTY: InvalidRequestError,
  KEY_TOO_LARGE: LimitExceededError,
  VALUE_TOO_LARGE: LimitExceededError,
  TOO_MANY_OPS: LimitExceededError,
  RANGE_DELETE_TOO_LARGE: LimitExceededError,
  COMPARE_READ_TOO_LARGE: LimitExceededError,
  BODY_TOO_LARGE: LimitExceededError,
  UNSUPPORTED_MEDIA_TYPE: InvalidRequestError,
  HOST_NOT_ALLOWED: InvalidRequestError,
  ORIGIN_NOT_ALLOWED: InvalidRequestError,
  METHOD_NOT_ALLOWED: InvalidRequestError,
  UPGRADE_REQUIRED: InvalidRequestError,
  KEY_NOT_FOUND: NotFoundError,
  NOT_FOUND: NotFoundError,
  COMPARE_FAILED: CompareFailedError,
  SEQ_NOT_RETAINED: SeqNotRetainedError,
  SEQ_WAIT_TIMEOUT: SeqWaitTimeoutError,
  OVERLOADED: NodeUnavailableError,
  BODY_BUDGET_EXCEEDED: NodeUnavailableError,
  READ_ONLY: NodeUnavailableError,
  SHUTTING_DOWN: NodeUnavailableError,
  UPSTREAM_UNAVAILABLE: NodeUnavailableError,
  ROOT_UNKNOWN: NodeUnavailableError,
  REPLICA_DIVERGED: NodeFailedError,
};

/**
 * A Retry-After header in ms. Only the delta-seconds form, which is what nodes send; an HTTP date (a proxy's) would
 * need the wall clock of a machine that may disagree with the node's, and counts as absent.
 */
export function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const text = Array.isArray(header) ? header[0] : header;
  return text !== undefined && /^\s*[0-9]{1,9}\s*$/.test(text) ? Number(text) * 1_000 : undefined;
}

/** What a code in an error answer looks like: an UPPER_SNAKE name, as every code of ErrorCode is. */
const ERROR_CODE_PATTERN = /^[A-Z][A-Z0-9_]*$/;

/** Where an error answer came from: the call (`GET /v1/status`, `watch`) and the node's base URL. */
export interface AnswerSource {
  readonly what: string;
  readonly url: string;
}

/**
 * The typed error for a node's error answer: the class of its code, or `UnknownCodeError` for a code this client does
 * not know (a newer node), keeping the node's code, message and status. A body that is not a Mercury error (not
 * JSON, a code that is not a short UPPER_SNAKE string, a message missing or over ERROR_MESSAGE_CHARS_MAX: a proxy in
 * between, or a broken node) is an `InvalidAnswerError` (`PROTOCOL`), never shown as the node's word.
 * `retryAfter` is the answer's Retry-After header, if any.
 */
export function serverError(status: number, body: string, from: AnswerSource, retryAfter?: string | string[]): ServerError | InvalidAnswerError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return badErrorAnswer(status, from, 'a body that is not JSON');
  }
  const error = typeof parsed === 'object' && parsed !== null ? (parsed as { error?: unknown }).error : undefined;
  if (typeof error !== 'object' || error === null || Array.isArray(error)) return badErrorAnswer(status, from, 'a body without an "error" object');
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code !== 'string' || code.length > ERROR_CODE_CHARS_MAX || !ERROR_CODE_PATTERN.test(code))
    return badErrorAnswer(status, from, `an error code that is not an UPPER_SNAKE name of at most ${ERROR_CODE_CHARS_MAX} characters`);
  if (typeof message !== 'string' || message.length > ERROR_MESSAGE_CHARS_MAX)
    return badErrorAnswer(status, from, `an error message that is not a string of at most ${ERROR_MESSAGE_CHARS_MAX} characters`);
  const details = error as Record<string, unknown>;
  const wait = retryAfterMs(retryAfter);
  // The cast is what UnknownCodeError documents: its code is the node's, outside this client's ErrorCode.
  if (!Object.hasOwn(ErrorCode, code)) return new UnknownCodeError(code as ErrorCode, message, { status, details, retryAfterMs: wait });
  const Class = CLASS_BY_CODE[code as ErrorCode] ?? NodeFailedError;
  return new Class(code as ErrorCode, message, { status, details, retryAfterMs: wait });
}

/** The InvalidAnswerError of an error answer that is not a Mercury error; a wire URL's came in an ERROR frame, not HTTP. */
function badErrorAnswer(status: number, from: AnswerSource, why: string): InvalidAnswerError {
  const answer = /^https?:/.test(from.url) ? `HTTP ${status}` : 'an ERROR frame';
  return new InvalidAnswerError('PROTOCOL', `${from.what}: ${from.url} answered ${answer} with ${why}; not a Mercury answer (a proxy in between, or a broken node)`, {
    url: from.url,
  });
}

/** One node could not be reached, or did not answer in time. */
export class UnavailableError extends Error {
  readonly code: string = 'UNAVAILABLE';
  /** The node's base URL. */
  readonly url: string;
  /**
   * False when the request certainly never reached the node (connection refused, host unknown): then even a write
   * may be sent elsewhere. True when it may have (timed out or cut off after sending).
   */
  readonly requestSent: boolean;
  constructor(message: string, options: { url?: string; requestSent?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'UnavailableError';
    this.url = options.url ?? '';
    this.requestSent = options.requestSent ?? true;
  }
}

/**
 * A node answered something that is not a Mercury answer: `code` `ANSWER_TOO_LARGE` when the body was over what the
 * call can legitimately receive (it was not read further), `PROTOCOL` when it was not the JSON the call expects
 * (wrong type, missing field, unknown encoding, a cursor that does not advance). A proxy's page or a broken or hostile
 * node: like a node that did not answer, a read goes on to the next node, and a write fails with
 * `OutcomeUnknownError`, since the node may have applied it before answering badly.
 */
export class InvalidAnswerError extends UnavailableError {
  override readonly code: 'PROTOCOL' | 'ANSWER_TOO_LARGE';
  constructor(code: 'PROTOCOL' | 'ANSWER_TOO_LARGE', message: string, options: { url: string; cause?: unknown }) {
    super(message, { url: options.url, requestSent: true, cause: options.cause });
    this.name = 'InvalidAnswerError';
    this.code = code;
  }
}

/** Every attempt failed without an answer. `errors` holds each attempt's error in order; `cause` is the last. */
export class NoNodeReachableError extends UnavailableError {
  override readonly code = 'NO_NODE_REACHABLE';
  readonly errors: readonly Error[];
  constructor(message: string, errors: readonly Error[]) {
    super(message, { cause: errors[errors.length - 1], requestSent: errors.some((error) => !(error instanceof UnavailableError) || error.requestSent) });
    this.name = 'NoNodeReachableError';
    this.errors = errors;
  }
}

/**
 * A write was sent to a node that did not answer (timeout, connection cut). It may or may not have been applied, so
 * it was not retried: read the key (or use `ifModSeq` / a transaction compare) before trying again.
 */
export class OutcomeUnknownError extends UnavailableError {
  override readonly code = 'OUTCOME_UNKNOWN';
  constructor(message: string, cause: UnavailableError) {
    super(message, { url: cause.url, requestSent: true, cause });
    this.name = 'OutcomeUnknownError';
  }
}

/** A watch was refused by the node (`code` is a `WatchErrorCode`), or could not be kept going. */
export class WatchError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WatchError';
    this.code = code;
  }
}

/**
 * A watch opened with `reconnect: false` lost its connection: `closeCode` and `reason` are the WebSocket close (1006:
 * cut without a close frame); a new watch from `resumeSeq` continues exactly after what this one delivered.
 */
export class WatchClosedError extends WatchError {
  readonly url: string;
  readonly closeCode: number;
  readonly reason: string;
  readonly resumeSeq: number | undefined;
  /** The hash of entry resumeSeq - 1, when known: the `afterHash` to resume with. */
  readonly resumeHash: string | undefined;
  constructor(url: string, closeCode: number, reason: string, resumeSeq: number | undefined, resumeHash?: string) {
    super('CLOSED', `${url} closed the watch (${closeCode}${reason.length > 0 ? `: ${reason}` : ''})`);
    this.name = 'WatchClosedError';
    this.url = url;
    this.closeCode = closeCode;
    this.reason = reason;
    this.resumeSeq = resumeSeq;
    this.resumeHash = resumeHash;
  }
}

/** An option passed to `connect`, `watch` or `openLocal` breaks a rule; the message names the option and the rule. */
export class ClientOptionsError extends MercuryError {
  constructor(message: string) {
    super('CONFIG_INVALID', message);
    this.name = 'ClientOptionsError';
  }
}
