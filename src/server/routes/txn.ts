/** `POST /v1/txn`: a transaction in the JSON form of src/api/txn.ts, parsed with field-naming errors, then written. */
import { JSON_BODY_BYTES_MAX, MercuryError, parseTxn } from '../../api/index.js';
import { requireAdmin, requireTxn, touchesReserved, validateReservedOps } from '../../auth/index.js';
import { principalOf, writeFor } from '../auth.js';
import { SEQ_HEADER, parseJson, readBody, sendJson } from '../http-io.js';
import type { NodeApi } from '../node-api.js';
import type { Route } from '../router.js';

export function txnRoute(node: NodeApi): Route {
  return {
    name: '/v1/txn',
    methods: {
      POST: async (req, res) => {
        // Required, not assumed: a body without a type (or text/plain, a form) is what a web page may send any node
        // without the browser asking it first (no CORS preflight), so only such a page would send one.
        const type = req.headers['content-type'];
        if (type === undefined || !/^application\/json\s*(;|$)/i.test(type))
          throw new MercuryError(
            'UNSUPPORTED_MEDIA_TYPE',
            `POST /v1/txn takes a JSON body with the header Content-Type: application/json; ${type === undefined ? 'the request had no Content-Type' : `got "${type}"`}`,
          );
        const body = await readBody(
          req,
          JSON_BODY_BYTES_MAX,
          (bytes) =>
            new MercuryError('BODY_TOO_LARGE', `request body is ${bytes} bytes; at most ${JSON_BODY_BYTES_MAX} are accepted; split the transaction`, {
              details: { limit: JSON_BODY_BYTES_MAX },
            }),
        );
        const txn = parseTxn(parseJson(body), node.valueBytesMax);
        const principal = principalOf(req);
        // Token records are written only by admins, and only as records (a replica forwards token management here).
        const reserved = touchesReserved(txn);
        if (reserved) {
          requireAdmin(principal, 'write token records');
          validateReservedOps(txn);
        }
        requireTxn(principal, txn, reserved);
        const { request, caller } = writeFor(req, txn);
        const result = await node.write(request, caller);
        sendJson(res, 200, { succeeded: result.succeeded, seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
    },
  };
}
