/**
 * `POST /v1/txn`: a transaction in the JSON form of src/api/txn.ts, read within the body limits (bounded JSON, checked
 * as it arrives), parsed with field-naming errors, then written.
 */
import { MercuryError, parseTxn, txnJsonLimits } from '../../api/index.js';
import { requireAdmin, requireAdminKept, requireNamesKept, requireSomeKeyScope, requireTxn, seesChain, touchesReserved, validateReservedOps } from '../../auth/index.js';
import { principalNow, principalOf, writeFor } from '../auth.js';
import type { BodyBudget } from '../body-budget.js';
import { SEQ_HEADER, readJsonBody, sendJson } from '../http-io.js';
import type { HttpLimits } from '../http-server.js';
import type { NodeApi } from '../node-api.js';
import type { Route } from '../router.js';

export function txnRoute(node: NodeApi, limits: HttpLimits, budget: BodyBudget): Route {
  const jsonLimits = txnJsonLimits(node.valueBytesMax);
  const bytesMax = limits.jsonBodyBytesMax;
  const tooLarge = (bytes: number): MercuryError =>
    new MercuryError('BODY_TOO_LARGE', `request body is ${bytes} bytes; at most ${bytesMax} are accepted; split the transaction`, {
      details: { limit: bytesMax },
    });
  return {
    name: '/v1/txn',
    methods: {
      POST: async (req, res) => {
        // What the URL alone tells, before a byte of the body is read and charged to the budget; each op is checked
        // against the scopes once the body is parsed.
        requireSomeKeyScope(principalOf(req), 'send a transaction');
        // Required, not assumed: a body without a type (or text/plain, a form) is what a web page may send any node
        // without the browser asking it first (no CORS preflight), so only such a page would send one.
        const type = req.headers['content-type'];
        if (type === undefined || !/^application\/json\s*(;|$)/i.test(type))
          throw new MercuryError(
            'UNSUPPORTED_MEDIA_TYPE',
            `POST /v1/txn takes a JSON body with the header Content-Type: application/json; ${type === undefined ? 'the request had no Content-Type' : `got "${type}"`}`,
          );
        const body = await readJsonBody(req, res, budget, jsonLimits, { bytesMax, tooLarge });
        const txn = parseTxn(body, node.valueBytesMax);
        const principal = principalNow(req, node);
        // Token records are written only by admins, and only as records (a replica forwards token management here).
        const reserved = touchesReserved(txn);
        if (reserved) {
          requireAdmin(principal, 'write token records');
          validateReservedOps(txn);
          requireAdminKept(txn, node.tokens());
          requireNamesKept(txn, node.tokens(), (key) => node.store.get(key).record?.value);
        }
        requireTxn(principal, txn, reserved);
        const { request, caller } = writeFor(req, res, txn);
        const result = await node.write(request, caller);
        // The entry's hash only to who may see the chain (seesChain): with the previous one it tests guesses of the
        // entry's other ops, which may lie outside the caller's scopes.
        const shown = result.hash !== undefined && seesChain(principal) ? { hash: result.hash.toString('hex') } : {};
        const answer = { succeeded: result.succeeded, seq: result.seq, ...shown };
        sendJson(res, 200, answer, { [SEQ_HEADER]: result.seq });
      },
    },
  };
}
