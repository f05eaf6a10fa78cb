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
  /** The query parameters each method reads; a method not listed takes none (any other is refused, see query.ts). */
  readonly params?: Readonly<Record<string, readonly string[]>>;
  /**
   * A static file (the dashboard's): its query string is never read, so none is refused. Browsers and operators add
   * one to such URLs (`?v=2` to bypass a cache) and expect the file.
   */
  readonly queryIgnored?: true;
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

/**
 * The method whose handler serves `method` on `route`: HEAD is served by GET's handler (node:http sends the head of
 * the answer and drops its body), as HTTP asks of every resource that answers GET. Undefined when there is none.
 */
function servingMethod(route: Route, method: string | undefined): string | undefined {
  if (method !== undefined && Object.hasOwn(route.methods, method)) return method;
  if (method === 'HEAD' && Object.hasOwn(route.methods, 'GET')) return 'GET';
  return undefined;
}

/** The methods a route answers, as the Allow header lists them. */
function allowedMethods(route: Route): string[] {
  const methods = Object.keys(route.methods);
  if (methods.includes('GET') && !methods.includes('HEAD')) methods.splice(methods.indexOf('GET') + 1, 0, 'HEAD');
  if (route.crossOrigin !== undefined) methods.push('OPTIONS');
  return methods;
}

/** The handler of `method` on `route` and the query parameters it reads, or METHOD_NOT_ALLOWED naming the allowed methods. */
export function methodHandler(route: Route, method: string | undefined): { handler: Handler; params: readonly string[] } {
  const serving = servingMethod(route, method);
  if (serving !== undefined) return { handler: route.methods[serving]!, params: route.params?.[serving] ?? [] };
  const allow = allowedMethods(route).join(', ');
  throw new MercuryError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${route.name}; allowed: ${allow}`, { details: { allow } });
}
