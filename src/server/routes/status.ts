/** What operators and monitors ask a node: `/v1/status`, `/healthz`, `/readyz`, `/metrics`, and a replica's resync. */
import { requireAdmin, seesChain, type Principal } from '../../auth/index.js';
import { DAMAGED_DATA_PHRASE } from '../../store/index.js';
import { principalOf } from '../auth.js';
import { sendJson } from '../http-io.js';
import type { NodeApi } from '../node-api.js';
import type { CrossOrigin, Route } from '../router.js';

/**
 * Status is readable from other origins: the /ui page served by one node walks the whole tree through every node's
 * status, and each node is its own origin (its own port). It is a GET without cookies; a token goes in the
 * Authorization header, which the preflight allows (the API handler answers it and sets the CORS headers: router.ts).
 */
const STATUS_CROSS_ORIGIN: CrossOrigin = Object.freeze({ methods: ['GET'], headers: ['authorization'], preflightMaxAgeS: 600 });

/**
 * Status takes any valid token, but its damage reports name what was met damaged, a key by its name: a token that may
 * not read that key (a narrow read scope, `replicate` for a dashboard, and every token for the reserved token records)
 * must not learn it. Only admin, which may read every key, gets the reports; others see that damage was met (`sound`,
 * `damageMet`: what the dashboard and `mercury status` show) and `damage: null`. A replica's `lastFailure` quotes
 * DATA_CORRUPTED messages too, its own (a halt on a damaged key) or its upstream's (a refusal): for others it says
 * that, and not where.
 */
export function statusFor(principal: Principal | undefined, status: Record<string, unknown>): Record<string, unknown> {
  if (principal === undefined || principal.scopes.admin) return status;
  const seen: Record<string, unknown> = { ...status, storage: { ...(status.storage as Record<string, unknown>), damage: null } };
  const replication = status.replication as { lastFailure?: unknown } | null | undefined;
  if (typeof replication?.lastFailure === 'string') seen.replication = { ...replication, lastFailure: withoutDamageNamed(replication.lastFailure) };
  // Entry hashes only to who may read every key (seesChain): two of them test guesses of an entry's values.
  if (!seesChain(principal)) {
    if ('headHash' in seen) seen.headHash = null;
    const shown = seen.replication as Record<string, unknown> | null | undefined;
    if (shown !== null && typeof shown === 'object' && 'divergedHead' in shown && shown.divergedHead !== null) seen.replication = { ...shown, divergedHead: null };
  }
  return seen;
}

/**
 * What a failure says up to the damage it met ("damaged data on this node: key ...", its own or quoted from an
 * upstream's refusal), then where to read the rest.
 */
function withoutDamageNamed(failure: string): string {
  const at = failure.indexOf(DAMAGED_DATA_PHRASE);
  return at < 0 ? failure : `${failure.slice(0, at + DAMAGED_DATA_PHRASE.length)} (where: in the status an admin token reads)`;
}

export function statusRoute(node: NodeApi): Route {
  return {
    name: '/v1/status',
    methods: { GET: (req, res) => sendJson(res, 200, statusFor(principalOf(req), node.status())) },
    crossOrigin: STATUS_CROSS_ORIGIN,
  };
}

export function healthzRoute(node: NodeApi): Route {
  return { name: '/healthz', methods: { GET: (_req, res) => sendJson(res, 200, { ok: true, seq: node.store.head().seq }) } };
}

/** Readiness: 503 with the reasons when the node should not take traffic (damaged data, storage failing, not joined). */
export function readyzRoute(node: NodeApi): Route {
  return {
    name: '/readyz',
    methods: {
      GET: (_req, res) => {
        const { ready, reasons } = node.readiness();
        sendJson(res, ready ? 200 : 503, { ready, reasons, seq: node.store.head().seq });
      },
    },
  };
}

export function metricsRoute(node: NodeApi): Route {
  return {
    name: '/metrics',
    methods: {
      GET: (req, res) => {
        requireAdmin(principalOf(req), 'read the metrics');
        const text = node.metrics.render();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      },
    },
  };
}

/** `POST /v1/replication/resync`: a replica drops its chain and takes a snapshot (NOT_A_REPLICA on the root). */
export function resyncRoute(node: NodeApi): Route {
  return {
    name: '/v1/replication/resync',
    methods: {
      POST: (req, res) => {
        requireAdmin(principalOf(req), 'resync the replica');
        node.resync();
        sendJson(res, 202, { resync: 'started', seq: node.store.head().seq });
      },
    },
  };
}
