/** What the wire port needs from a node: the same operations the HTTP API's key routes use (src/server/node-api.ts). */
import type { Socket } from 'node:net';
import type { Principal } from '../auth/index.js';
import type { WriteRequest, WriteResult } from '../commit/index.js';
import type { BodyBudget, WriteCaller } from '../server/index.js';
import type { Store } from '../store/index.js';

export interface WireNode {
  readonly store: Store;
  readonly valueBytesMax: number;
  /**
   * The node's budget of request bodies in flight, shared with the HTTP API: a PUT's value is reserved in it until the
   * PUT is answered. Without it a replica whose upstream stalled held every forwarded PUT its wire clients sent (up to
   * connections x requests in flight x the largest value), where HTTP refuses past `bodyBytesInFlightMax`.
   */
  readonly bodyBudget: BodyBudget;
  /** Commits (root) or forwards (replica) a write; resolves once it is durable and visible on this node. */
  write(request: WriteRequest, caller: WriteCaller): Promise<WriteResult>;
  /** Resolves once this node has applied `seq`; rejects with SEQ_WAIT_TIMEOUT after `timeoutMs`, or at once when `gone` aborts. */
  waitForSeq(seq: number, timeoutMs: number, gone?: AbortSignal): Promise<void>;
  /** HELLO: the token's principal, else the verified client certificate's; undefined with auth off. Throws UNAUTHENTICATED. */
  authenticate(token: string | undefined, socket: Socket): Principal | undefined;
  /** A principal as it stands now (new scopes); throws UNAUTHENTICATED once revoked. */
  current(principal: Principal | undefined): Principal | undefined;
  log(message: string, fields?: Record<string, unknown>): void;
}
