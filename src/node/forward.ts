/**
 * Write forwarding on a replica: a replica's dataset is read-only, so a write it receives goes to its upstream's HTTP
 * API as a JSON transaction (and from there, hop by hop, to the root). The answer names the seq that carries the write;
 * the replica answers its client only once it has applied that seq itself, which gives read-your-writes on any node.
 */
import { ErrorCode, MercuryError } from '../errors/index.js';
import type { WriteRequest, WriteResult } from '../commit/index.js';
import { formatTxnJson } from '../server/index.js';

export const FORWARD_TIMEOUT_MS = 30_000;

export async function forwardWrite(upstreamHttpUrl: string | undefined, request: WriteRequest, timeoutMs = FORWARD_TIMEOUT_MS): Promise<WriteResult> {
  if (upstreamHttpUrl === undefined)
    throw new MercuryError('UPSTREAM_UNAVAILABLE', 'this replica is not connected to an upstream, so it cannot forward the write; retry, or write to the root');
  let response: Response;
  try {
    response = await fetch(`${upstreamHttpUrl}/v1/txn`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(formatTxnJson(request)),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new MercuryError('UPSTREAM_UNAVAILABLE', `forwarding the write to ${upstreamHttpUrl} failed (${(error as Error).message}); it may or may not have been applied: read before retrying a non-idempotent write`, {
      cause: error,
    });
  }
  const body = (await response.json().catch(() => ({}))) as { succeeded?: boolean; seq?: number; error?: { code?: string; message?: string } };
  if (response.ok && typeof body.seq === 'number' && typeof body.succeeded === 'boolean') return { succeeded: body.succeeded, seq: body.seq };
  const code = body.error?.code;
  const known = code !== undefined && (Object.values(ErrorCode) as string[]).includes(code);
  throw new MercuryError(known ? (code as ErrorCode) : 'UPSTREAM_UNAVAILABLE', body.error?.message ?? `upstream ${upstreamHttpUrl} answered HTTP ${response.status}`);
}
