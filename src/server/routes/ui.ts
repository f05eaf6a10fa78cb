/** `/ui`: the operator dashboard's static files (src/ui/), with a strict Content-Security-Policy. */
import { UI_CONTENT_SECURITY_POLICY, UI_PATH, uiAssets } from '../../ui/index.js';
import type { Route } from '../router.js';

export function uiRoutes(): Route[] {
  const files = uiAssets().map(
    (asset): Route => ({
      name: asset.path,
      queryIgnored: true,
      methods: {
        GET: (_req, res) => {
          res.writeHead(200, {
            'content-type': asset.contentType,
            'content-length': asset.body.length,
            'content-security-policy': UI_CONTENT_SECURITY_POLICY,
            'x-content-type-options': 'nosniff',
            'referrer-policy': 'no-referrer',
            // A new version of the node ships a new page: always revalidate.
            'cache-control': 'no-cache',
          });
          res.end(asset.body);
        },
      },
    }),
  );
  const redirect: Route = {
    name: '/ui',
    queryIgnored: true,
    methods: {
      GET: (_req, res) => {
        res.writeHead(308, { location: UI_PATH, 'content-length': 0 });
        res.end();
      },
    },
  };
  return [redirect, ...files];
}
