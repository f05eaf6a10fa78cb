/**
 * The HTTP API of a node (`/v1`, `/healthz`, `/metrics`): one small handler per route (src/server/routes/), a router
 * (router.ts), and here the one entry point that counts and times every request and turns errors into answers.
 *
 * The API talks to the node through `NodeApi`, so the same routes serve a root (writes go to its group commit) and a
 * replica (writes are forwarded toward the root).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MercuryError, decodeKeyPath, parseRequestTarget } from '../api/index.js';
import { SECONDS_BUCKETS } from '../metrics/index.js';
import { admit } from './auth.js';
import { AnswerBudget } from './answer-budget.js';
import { BodyBudget } from './body-budget.js';
import { SEND_SLICE_BYTES, bodyLeftUnread, dropUnreadBody, sendError, setSendDeadline, type SendDeadline } from './http-io.js';
import { HTTP_LIMITS, type HttpLimits } from './http-server.js';
import type { NodeApi } from './node-api.js';
import { Query } from './query.js';
import { requestRefusal } from './request-policy.js';
import { Router, methodHandler, type CrossOrigin } from './router.js';
import { kvKeyRoute, kvRangeRoute } from './routes/kv.js';
import { logRoute } from './routes/log.js';
import { snapshotEntriesRoute, snapshotRoute } from './routes/snapshot.js';
import { healthzRoute, metricsRoute, readyzRoute, resyncRoute, statusRoute } from './routes/status.js';
import { tokensRoute } from './routes/tokens.js';
import { txnRoute } from './routes/txn.js';
import { uiRoutes } from './routes/ui.js';
import { watchRoute } from './routes/watch.js';

export type { NodeApi } from './node-api.js';

/** Routes that answer without a credential: liveness and readiness probes carry none. */
const PUBLIC_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz']);

/** Probes, and the dashboard's static files (they hold no data; the page then calls the API with a token). */
function isPublic(routeName: string): boolean {
  return PUBLIC_ROUTES.has(routeName) || routeName === '/ui' || routeName.startsWith('/ui/');
}

/**
 * The CORS preflight of a route pages of other origins may read, answered before authentication: a browser sends it
 * without credentials, to ask whether it may send them (router.ts, CrossOrigin). A body, which no browser sends with
 * one, is dropped as for a refused request.
 */
function answerPreflight(req: IncomingMessage, res: ServerResponse, crossOrigin: CrossOrigin, limits: HttpLimits): void {
  dropUnreadBody(req, limits.jsonBodyBytesMax);
  res.writeHead(204, {
    'access-control-allow-methods': crossOrigin.methods.join(', '),
    'access-control-allow-headers': crossOrigin.headers.join(', '),
    'access-control-max-age': String(crossOrigin.preflightMaxAgeS),
    ...(bodyLeftUnread(req) ? { connection: 'close' } : {}),
  });
  res.end();
}

/**
 * `budget`: the node's budget of request bodies in flight (`limits.bodyBytesInFlightMax`), shared with the wire
 * port's PUTs (node.ts), so that neither port can hold more than the other allows; one of its own when not given.
 */
export function createApiHandler(
  node: NodeApi,
  limits: HttpLimits = HTTP_LIMITS,
  budget: BodyBudget = new BodyBudget(limits.bodyBytesInFlightMax, limits.bodyBytesInFlightPerAddressMax),
): (req: IncomingMessage, res: ServerResponse) => void {
  const budgetRefusals = node.metrics.counter('mercury_http_body_budget_refusals_total', 'Request bodies refused with BODY_BUDGET_EXCEEDED (HTTP bodies and wire-port PUTs).');
  const budgetAddressRefusals = node.metrics.counter(
    'mercury_http_body_address_refusals_total',
    `Of those, bodies refused because their remote host held its share of the budget (${limits.bodyBytesInFlightPerAddressMax} bytes): one host sending many bodies at once, or slowly.`,
  );
  budget.onRefused((byAddress) => {
    budgetRefusals.inc();
    if (byAddress) budgetAddressRefusals.inc();
  });
  node.metrics.gauge('mercury_http_body_bytes_in_flight', 'Request body bytes reserved by requests not yet answered (HTTP bodies and wire-port PUTs).', () => budget.bytesInFlight);
  const answers = new AnswerBudget(limits.answerBytesHeldMax, SEND_SLICE_BYTES, limits.answerBytesHeldPerAddressMax);
  const answerRefusals = node.metrics.counter('mercury_http_answer_budget_refusals_total', 'Large answers refused OVERLOADED because the node held its budget of answers not yet taken by their clients.');
  const answerAddressRefusals = node.metrics.counter(
    'mercury_http_answer_address_refusals_total',
    `Large answers refused OVERLOADED because their remote host's connections held its share of that budget (${limits.answerBytesHeldPerAddressMax} bytes) untaken.`,
  );
  answers.onRefused((byAddress) => (byAddress ? answerAddressRefusals : answerRefusals).inc());
  node.metrics.gauge('mercury_http_answer_bytes_held', `Bytes of large answers (values and range pages over ${SEND_SLICE_BYTES} bytes) held until their clients take them; at most ${limits.answerBytesHeldMax}.`, () => answers.bytesHeld);
  const requests = node.metrics.counter('mercury_http_requests_total', 'HTTP requests by route, method and status.');
  const seconds = node.metrics.histogram('mercury_http_request_seconds', 'HTTP request duration.', SECONDS_BUCKETS);
  const internal = (error: unknown): void => node.log('internal error', { error: String((error as Error)?.stack ?? error) });
  const router = new Router(
    [
      kvRangeRoute(node, limits, answers),
      txnRoute(node, limits, budget),
      logRoute(node, limits),
      statusRoute(node),
      resyncRoute(node),
      healthzRoute(node),
      readyzRoute(node),
      metricsRoute(node),
      tokensRoute(node, budget),
      snapshotRoute(node),
      snapshotEntriesRoute(node),
      watchRoute(),
      ...uiRoutes(),
    ],
    '/v1/kv/',
    kvKeyRoute(node, budget, answers),
  );
  const sendStalls = node.metrics.counter('mercury_http_send_stalls_total', 'Answers (streamed or not) cut off because their client took nothing for http.sendStallMs, by route.');
  const sendTooSlow = node.metrics.counter(
    'mercury_http_send_too_slow_total',
    'Snapshots cut off because their client took less than http.snapshotPaceBytesMin in a http.snapshotPaceWindowMs, by route.',
  );
  const routeOf = (res: ServerResponse): string => {
    const target = parseRequestTarget(res.req.url ?? '/');
    return (target === undefined ? undefined : router.match(target.path))?.route.name ?? 'unknown';
  };
  const sendDeadline: SendDeadline = {
    clock: node.clock,
    stallMs: limits.sendStallMs,
    onStalled: (res) => {
      const route = routeOf(res);
      sendStalls.inc(1, { route });
      node.log(
        `SEND_STALLED: the client took nothing of the answer for ${limits.sendStallMs} ms; its connection was closed`,
        { code: 'SEND_STALLED', route, method: res.req.method, remote: res.req.socket.remoteAddress, stallMs: limits.sendStallMs },
        'warn',
      );
    },
    pace: {
      windowMs: limits.snapshotPaceWindowMs,
      bytesMin: limits.snapshotPaceBytesMin,
      onTooSlow: (res, takenBytes, windowMs) => {
        const route = routeOf(res);
        sendTooSlow.inc(1, { route });
        node.log(
          `SEND_TOO_SLOW: the client took ${takenBytes} bytes of the answer in ${windowMs} ms, less than ${limits.snapshotPaceBytesMin} per ${limits.snapshotPaceWindowMs} ms (it holds a read transaction, which keeps the data file from reusing pages); its connection was closed`,
          { code: 'SEND_TOO_SLOW', route, method: res.req.method, remote: res.req.socket.remoteAddress, takenBytes, windowMs, bytesMin: limits.snapshotPaceBytesMin },
          'warn',
        );
      },
    },
  };

  return (req, res) => {
    const started = node.clock.monotonicMs();
    // Malformed targets (undefined) route nowhere; requestRefusal below answers them 400.
    const target = parseRequestTarget(req.url ?? '/');
    const path = target?.path ?? '';
    const match = target === undefined ? undefined : router.match(path);
    const routeName = match?.route.name ?? 'unknown';
    setSendDeadline(res, sendDeadline);
    res.once('finish', () => {
      requests.inc(1, { method: req.method ?? '', route: routeName, status: String(res.statusCode) });
      seconds.observe((node.clock.monotonicMs() - started) / 1000);
    });
    const fail = (error: unknown): void => {
      // Refused before the handler read the body (401, 403 from the URL, a bad key...): dropped unread, unbudgeted.
      dropUnreadBody(req, limits.jsonBodyBytesMax);
      sendError(res, error, internal);
    };
    const crossOrigin = match?.route.crossOrigin;
    if (crossOrigin !== undefined) res.setHeader('access-control-allow-origin', '*');
    try {
      const refused = requestRefusal(req, node.requestPolicy, req.method);
      if (refused !== undefined) throw refused;
      if (crossOrigin !== undefined && req.method === 'OPTIONS') {
        answerPreflight(req, res, crossOrigin, limits);
        return;
      }
      // Probes and CORS preflights (above) answer without a credential; everything else, unknown paths included,
      // needs one first, from the headers: no route reads a body before this (readBody asserts it), and each checks
      // what scope it can tell from the method and URL before it reads one (src/server/auth.ts).
      if (match === undefined || !isPublic(match.route.name)) admit(req, node.authenticate(req));
      if (match === undefined) throw new MercuryError('NOT_FOUND', `no route ${path}; see the API reference in the README`);
      const key = match.keyPath === undefined ? undefined : decodeKeyPath(match.keyPath);
      const { handler, params } = methodHandler(match.route, req.method);
      const query = new Query(target!.query);
      if (match.route.queryIgnored !== true) query.refuseUnknown(params, `${req.method} ${match.route.name}`);
      const done = handler(req, res, query, key);
      if (done !== undefined) done.catch(fail);
    } catch (error) {
      fail(error);
    }
  };
}
