/**
 * Routing of the HTTP API: a route is a path with one handler per method. Routes are matched on the raw request path,
 * not on a parsed URL: keys may contain "/", "." and ".." segments, and URL normalisation would silently rewrite them.
 * Exact paths are one map lookup; the one parameterised route, `/v1/kv/{key}`, takes the rest of the path as a
 * percent-encoded key.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MercuryError } from '../api/index.js';
import type { Query } from './query.js';

/** Handles one method of one route. `key` is the decoded `{key}` of a key route, undefined elsewhere. */
export type Handler = (req: IncomingMessage, res: ServerResponse, query: Query, key: Buffer | undefined) => Promise<void> | void;

/**
 * A route that pages of other origins may read (CORS, for the dashboard). Every answer of it carries
 * `access-control-allow-origin: *`, errors included (a page can only tell "needs a token" from "down" if it may read
 * the 401), and its preflight (OPTIONS) is answered before authentication (api.ts): a preflight carries no credential
 * by definition (the browser sends it to ask whether it may send one) and grants nothing by itself. No cookie is ever
 * involved: a page sends a token in `Authorization`, which the preflight allows.
 */
export interface CrossOrigin {
  /** Methods a page of another origin may use. */
  readonly methods: readonly string[];
  /** Request headers it may send, lower case. */
  readonly headers: readonly string[];
  /** How long a browser may keep the preflight's answer. */
  readonly preflightMaxAgeS: number;
}

export interface Route {
  /** The path as metrics and error messages name it (`/v1/kv/{key}`). */
  readonly name: string;
  readonly methods: Readonly<Record<string, Handler>>;
  /** Absent: no page of another origin may read the route (no CORS header, and OPTIONS is no method of it). */
  readonly crossOrigin?: CrossOrigin;
}

export interface RouteMatch {
  readonly route: Route;
  /** The still percent-encoded `{key}` of the key route (see `decodeKeyPath`); undefined for other routes. */
  readonly keyPath: string | undefined;
}

export class Router {
  private readonly exact: ReadonlyMap<string, Route>;

  /** `keyRoute` serves every path under `keyPrefix` (`/v1/kv/`), with the rest of the path as the key. */
  constructor(
    routes: readonly Route[],
    private readonly keyPrefix: string,
    private readonly keyRoute: Route,
  ) {
    this.exact = new Map(routes.map((route) => [route.name, route]));
  }

  /** The route of a path, or undefined. */
  match(path: string): RouteMatch | undefined {
    const route = this.exact.get(path);
    if (route !== undefined) return { route, keyPath: undefined };
    if (path.startsWith(this.keyPrefix)) return { route: this.keyRoute, keyPath: path.slice(this.keyPrefix.length) };
    return undefined;
  }
}

/** The handler of `method` on `route`, or METHOD_NOT_ALLOWED naming the allowed ones. */
export function methodHandler(route: Route, method: string | undefined): Handler {
  const handler = route.methods[method ?? ''];
  if (handler !== undefined) return handler;
  const allow = [...Object.keys(route.methods), ...(route.crossOrigin === undefined ? [] : ['OPTIONS'])].join(', ');
  throw new MercuryError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${route.name}; allowed: ${allow}`, { details: { allow } });
}
