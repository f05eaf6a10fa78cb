/** What the HTTP API needs from a node: the same routes serve a root (writes go to its group commit) and a replica. */
import type { IncomingMessage } from 'node:http';
import type { Principal, TokenRecord } from '../auth/index.js';
import type { Clock } from '../clock/index.js';
import type { LogLevel } from '../logging/index.js';
import type { WriteRequest, WriteResult } from '../commit/index.js';
import type { Registry } from '../metrics/index.js';
import type { Store } from '../store/index.js';
import type { RequestPolicy } from './request-policy.js';

/** Who a write is made for (src/server/auth.ts `writeFor`). */
export interface WriteCaller {
  /** The principal's name, recorded as the entry's author; undefined with auth off. */
  readonly author: string | undefined;
  /** The caller's Authorization header, which a replica forwards with the write to its upstream. */
  readonly authorization: string | undefined;
  /**
   * A signal that aborts once the caller's connection closed (made when asked: a root never asks). A replica forwards
   * a write, and then waits for its seq, until then at the latest: the forward holds a connection to the upstream and
   * one of the replica's forwarded writes, the wait one of the node's parked reads.
   */
  readonly gone?: () => AbortSignal;
}

export interface NodeApi {
  readonly store: Store;
  readonly clock: Clock;
  readonly metrics: Registry;
  readonly valueBytesMax: number;
  /** Commits (root) or forwards (replica) a write; resolves once it is durable and visible on this node. */
  write(request: WriteRequest, caller?: WriteCaller): Promise<WriteResult>;
  /** The request's principal (undefined with auth off); throws UNAUTHENTICATED. */
  authenticate(req: IncomingMessage): Principal | undefined;
  /** `principal` as its token is now (its scopes may have changed); throws UNAUTHENTICATED once it was revoked. */
  currentPrincipal(principal: Principal | undefined): Principal | undefined;
  /** The tokens this node knows (from its replicated records). */
  tokens(): TokenRecord[];
  /** Token keys whose record grants nothing because it could not be read (newer version, damage), with why. */
  unreadableTokens(): readonly { readonly id: string; readonly why: string }[];
  /** Resolves once this node has applied `seq`; rejects with SEQ_WAIT_TIMEOUT after `timeoutMs`, or at once when `gone` aborts. */
  waitForSeq(seq: number, timeoutMs: number, gone?: AbortSignal): Promise<void>;
  /**
   * Calls `listener` each time token `tokenId` is revoked or given another grant (its record replaced: scopes, secret,
   * subject) until the returned function is called (which forgets it): a read parked on `minSeq` checks the token
   * again then, rather than at its timeout. Absent: nothing is told.
   */
  onGrantChanged?(tokenId: string, listener: () => void): () => void;
  status(): Record<string, unknown>;
  /** Whether the node should take traffic, and why not (`/readyz`). */
  readiness(): { ready: boolean; reasons: string[] };
  /** Replica: discard the chain and take a full snapshot (throws NOT_A_REPLICA on the root, RESYNC_IN_PROGRESS while one runs). */
  resync(): void;
  /** Logs at `level`, 'error' if not given. */
  log(message: string, fields?: Record<string, unknown>, level?: LogLevel): void;
  /** Which Host names and Origins the API accepts (DNS rebinding, cross-site requests). */
  readonly requestPolicy: RequestPolicy;
}
