/**
 * Token management (admin): `POST /v1/auth/tokens` creates a token (its secret is in this answer only),
 * `GET /v1/auth/tokens` lists them (never a secret nor a hash), `DELETE /v1/auth/tokens?id=ID` revokes one. Creating
 * and revoking are writes of token records (src/auth/admin.ts): on a replica they are forwarded to the root like any
 * write, with the caller's token, and answered once applied here.
 */
import { JSON_NAME_BYTES_MAX, MercuryError, type JsonLimits } from '../../api/index.js';
import { adminKeptAfter, createTokenRequest, indexedName, isTokenId, requireAdmin, revokeTokenRequest, tokenInfo, tokenNameTaken, type ReadKey } from '../../auth/index.js';
import { principalNow, principalOf, writeFor } from '../auth.js';
import type { BodyBudget } from '../body-budget.js';
import { SEQ_HEADER, readJsonBody, sendJson } from '../http-io.js';
import type { NodeApi } from '../node-api.js';
import type { Route } from '../router.js';

/** A token request is a name, a few scopes and maybe a subject: small bounds, checked as the body arrives. */
const TOKEN_BODY_BYTES_MAX = 64 * 1024;
const TOKEN_JSON_LIMITS: JsonLimits = { depthMax: 3, elementsMax: 1024, stringBytesMax: 4096, nameBytesMax: JSON_NAME_BYTES_MAX };

export function tokensRoute(node: NodeApi, budget: BodyBudget): Route {
  // The token name index as this node's store has it (admin.ts: createTokenRequest, indexedName).
  const readKey: ReadKey = (key) => node.store.get(key).record?.value;
  return {
    name: '/v1/auth/tokens',
    params: { DELETE: ['id'] },
    methods: {
      GET: (req, res) => {
        requireAdmin(principalOf(req), 'list tokens');
        // Unreadable records are listed apart, by id and reason, so an admin can find and revoke them: they grant nothing.
        const unreadable = node.unreadableTokens().map(({ id, why }) => ({ id, damaged: true, why }));
        sendJson(res, 200, { tokens: node.tokens().map(tokenInfo), unreadable, seq: node.store.head().seq });
      },
      POST: async (req, res) => {
        requireAdmin(principalOf(req), 'create tokens');
        const input = await readJsonBody(req, res, budget, TOKEN_JSON_LIMITS, {
          bytesMax: TOKEN_BODY_BYTES_MAX,
          tooLarge: (bytes) => new MercuryError('BODY_TOO_LARGE', `request body is ${bytes} bytes; at most ${TOKEN_BODY_BYTES_MAX}`, { details: { limit: TOKEN_BODY_BYTES_MAX } }),
        });
        requireAdmin(principalNow(req, node), 'create tokens');
        if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new MercuryError('INVALID_ARGUMENT', 'the body must be an object {"name","scopes"[,"subject"][,"expiresInMs"]}');
        for (const field of Object.keys(input)) if (!['name', 'scopes', 'subject', 'expiresInMs'].includes(field)) throw new MercuryError('INVALID_ARGUMENT', `unknown field "${field}"; fields are name, scopes, subject, expiresInMs`);
        const created = createTokenRequest(
          input as Record<string, unknown> as { name: unknown; scopes: unknown; subject?: unknown; expiresInMs?: unknown },
          node.clock.nowMs(),
          node.tokens(),
          readKey,
        );
        const { request, caller } = writeFor(req, res, created.request);
        const result = await node.write(request, caller);
        if (!result.succeeded) {
          // The write waited until this node applied its seq: the registry shows which compare failed. Almost always
          // the name's: another create of it was applied first (two admins racing, perhaps through two replicas).
          const tokens = node.tokens();
          if (tokens.some((record) => record.id === created.record.id)) throw new MercuryError('INTERNAL', `token id ${created.record.id} exists already; create the token again`);
          throw tokenNameTaken(created.record.name, tokens.find((record) => record.name === created.record.name));
        }
        sendJson(res, 201, { ...tokenInfo(created.record), ...(created.token === undefined ? {} : { token: created.token }), seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
      DELETE: async (req, res, query) => {
        requireAdmin(principalOf(req), 'revoke tokens');
        const id = query.get('id') ?? '';
        if (!isTokenId(id)) throw new MercuryError('INVALID_ARGUMENT', `?id= must be a token id (16 hex digits, as mercury token list shows), got "${id.slice(0, 40)}"`);
        const wasUnreadable = node.unreadableTokens().some((record) => record.id === id);
        const tokens = node.tokens();
        const keptAdminId = adminKeptAfter(id, tokens);
        // The name's index key goes with the record when it names this token (a token made before the index has none).
        const { request, caller } = writeFor(req, res, revokeTokenRequest(id, keptAdminId, indexedName(id, tokens, readKey)));
        const result = await node.write(request, caller);
        if (!result.succeeded) {
          // The write waited until this node applied its seq: the registry shows which compare failed.
          if (keptAdminId !== undefined && node.tokens().some((record) => record.id === id))
            throw new MercuryError(
              'LAST_ADMIN_TOKEN',
              `token ${id} was not revoked: admin token ${keptAdminId}, the one it would have left, was revoked meanwhile; list the tokens (mercury token list) and try again`,
              { details: { id, seq: result.seq } },
            );
          throw new MercuryError('NOT_FOUND', `no token ${id}: never created, or already revoked`, { details: { seq: result.seq } });
        }
        sendJson(res, 200, { id, revoked: true, ...(wasUnreadable ? { damaged: true } : {}), seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
    },
  };
}
