/**
 * `/v1/watch` asked for without a WebSocket upgrade. The watch hub (src/watch/hub.ts) takes the upgrade requests of
 * the path from node:http before any route; what reaches the routes is a plain request (a browser opening the URL,
 * `curl` without the headers), which gets 426 UPGRADE_REQUIRED saying how to open a watch instead of a 404 that says
 * the path does not exist.
 */
import { MercuryError, WATCH_PATH } from '../../api/index.js';
import type { Route } from '../router.js';

export function watchRoute(): Route {
  const upgradeRequired = (): never => {
    throw new MercuryError(
      'UPGRADE_REQUIRED',
      `${WATCH_PATH} serves watches over WebSocket: open a WebSocket to it (a GET with "Upgrade: websocket", ws:// or wss://); see the Watch API in the README`,
    );
  };
  return { name: WATCH_PATH, methods: { GET: upgradeRequired } };
}
