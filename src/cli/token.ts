/**
 * `mercury token create NAME --scope S [--scope S...] [--subject CN] [--expires-in DURATION] | list | revoke ID | prune`: token management against a
 * node's admin routes (`/v1/auth/tokens`), with an admin token. `create` prints the secret once: the node keeps only
 * its hash. With --json each command prints one JSON object.
 *
 * The answers are checked before they are printed (AnswerShapeError when a field the line needs is missing): a node,
 * or whatever answers at its URL, is not trusted to send the shape the client's types declare.
 */
import { TOKEN_EXPIRES_IN_MS_MAX, TOKEN_EXPIRES_IN_MS_MIN } from '../auth/index.js';
import type { NodeClient } from '../client/index.js';
import { systemClock } from '../clock/index.js';
import { answerList, answerObject, AnswerShapeError, fieldText, formatTimeMs, inLine, printResult } from './output.js';

export class TokenUsageError extends Error {}

const DURATION_UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--expires-in`: a whole number and one unit (90s, 30m, 12h, 30d), within the node's bounds; milliseconds. */
export function parseExpiresIn(text: string): number {
  const match = /^([1-9][0-9]{0,9})([smhd])$/.exec(text);
  const ms = match === null ? undefined : Number(match[1]) * DURATION_UNIT_MS[match[2]!]!;
  if (ms === undefined || ms < TOKEN_EXPIRES_IN_MS_MIN || ms > TOKEN_EXPIRES_IN_MS_MAX)
    throw new TokenUsageError(
      `--expires-in must be a whole number and a unit, s, m, h or d (90s, 30m, 12h, 30d), from 1s to ${TOKEN_EXPIRES_IN_MS_MAX / DURATION_UNIT_MS.d!}d; got "${inLine(text)}"`,
    );
  return ms;
}

/** A field as text: '?' when it is not the string the node should have sent. */
function text(value: unknown): string {
  return typeof value === 'string' ? inLine(value) : '?';
}

/** `scopes` as the command line takes them, space-separated ('?' for anything that is not a string). */
function scopesText(token: Record<string, unknown>, what: string): string {
  return answerList(token.scopes, `${what}'s scopes`).map(text).join(' ');
}

function describe(value: unknown): string {
  const token = answerObject(value, 'a token');
  const who = token.kind === 'certificate' ? `certificate CN=${text(token.subject)}` : 'token';
  // Expired records stay until revoked (nothing removes them): the list says which grant nothing any more, by this
  // machine's clock (each node judges by its own, decision 61), rather than leave a past date to be noticed.
  const expired = typeof token.expiresMs === 'number' && token.expiresMs <= systemClock.nowMs();
  const expires =
    token.expiresMs === undefined
      ? ''
      : expired
        ? `  EXPIRED at ${formatTimeMs(token.expiresMs)}: grants nothing; mercury token revoke ${text(token.id)} removes it`
        : `  expires ${formatTimeMs(token.expiresMs)}`;
  return `${text(token.id)}  ${text(token.name).padEnd(20)}  ${who}  ${scopesText(token, 'a token')}  created ${formatTimeMs(token.createdMs)}${expires}`;
}

/** A record the node could not read: it grants nothing, and `mercury token revoke ID` removes it. */
function describeUnreadable(value: unknown): string {
  const record = answerObject(value, 'an unreadable token record');
  return `${text(record.id)}  DAMAGED (${text(record.why)}): grants nothing; remove it with mercury token revoke ${text(record.id)}`;
}

/**
 * `token prune`: revokes every token record that has expired, by this machine's clock (as `list` marks them), one
 * revocation each, so that the node's own rules apply to each (the last admin record is kept: 409, reported and
 * skipped). An expired record grants nothing but stays until revoked; short-lived tokens (a CI job's) pile up
 * without this. A record another admin revoked meanwhile (404) counts as gone. Any other refusal is reported, the
 * others are still revoked, and the command then fails (exit 1) naming how many were left.
 */
async function pruneExpired(client: NodeClient, json: boolean): Promise<void> {
  const answer = answerObject(await client.listTokens(), 'the token list');
  const nowMs = systemClock.nowMs();
  const expired = answerList(answer.tokens, "the token list's tokens")
    .map((value) => answerObject(value, 'a token'))
    .filter((token) => typeof token.expiresMs === 'number' && token.expiresMs <= nowMs && typeof token.id === 'string');
  const revoked: { id: string; name: unknown; expiresMs: unknown; seq?: unknown }[] = [];
  const kept: { id: string; name: unknown; code: string; message: string }[] = [];
  for (const token of expired) {
    const id = token.id as string;
    try {
      const result = answerObject(await client.revokeToken(id), 'the revocation');
      revoked.push({ id, name: token.name, expiresMs: token.expiresMs, seq: result.seq });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === 'NOT_FOUND') {
        revoked.push({ id, name: token.name, expiresMs: token.expiresMs });
        continue;
      }
      if (typeof code !== 'string') throw error;
      kept.push({ id, name: token.name, code, message: (error as Error).message });
    }
  }
  const lines = [
    ...revoked.map((token) => `revoked ${text(token.id)}  ${text(token.name)}  (expired ${formatTimeMs(token.expiresMs)})`),
    ...kept.map((token) => `kept ${text(token.id)}  ${text(token.name)}: ${token.code}: ${inLine(token.message)}`),
    `${revoked.length} expired token${revoked.length === 1 ? '' : 's'} revoked${kept.length === 0 ? '' : `, ${kept.length} kept`}`,
  ];
  printResult(json, { revoked, kept }, () => lines.join('\n'));
  if (kept.length > 0) throw new TokenPruneError(`${kept.length} expired token${kept.length === 1 ? '' : 's'} could not be revoked (listed above)`);
}

/** Some expired tokens were refused revocation: what was done is printed, and the command exits 1. */
export class TokenPruneError extends Error {}

export interface TokenOptions {
  readonly scopes: readonly string[];
  readonly subject: string | undefined;
  /** `--expires-in`, as given. */
  readonly expiresIn: string | undefined;
}

export async function tokenCommand(client: NodeClient, args: readonly string[], { scopes, subject, expiresIn }: TokenOptions, json: boolean): Promise<void> {
  const [action, argument] = args;
  switch (action) {
    case 'create': {
      if (argument === undefined || argument === '') throw new TokenUsageError('token create needs a NAME');
      if (scopes.length === 0) throw new TokenUsageError('token create needs at least one --scope (read:PREFIX, write:PREFIX, replicate, admin)');
      const expiresInMs = expiresIn === undefined ? undefined : parseExpiresIn(expiresIn);
      const created = answerObject(await client.createToken(argument, scopes, { subject, expiresInMs }), 'the created token');
      const expires = created.expiresMs === undefined ? '' : `, expiring ${formatTimeMs(created.expiresMs)}`;
      const granted = scopesText(created, 'the created token');
      if (created.token !== undefined && typeof created.token !== 'string') throw new AnswerShapeError('the created token\'s secret is not a string');
      const human =
        created.token === undefined
          ? `granted ${granted} to client certificates with subject CN=${text(created.subject)} (id ${text(created.id)})${expires}`
          : `${created.token}\n\ntoken ${text(created.id)} "${text(created.name)}" with ${granted}${expires}.\nThis is the only time the secret is shown: store it now (for example in a file, mode 0600, for --token-file).`;
      printResult(json, created, () => human);
      return;
    }
    case 'list': {
      const answer = answerObject(await client.listTokens(), 'the token list');
      const tokens = answerList(answer.tokens, 'the token list\'s tokens');
      // A node older than this field sends none: nothing unreadable to show.
      const unreadable = answer.unreadable === undefined ? [] : answerList(answer.unreadable, 'the token list\'s unreadable records');
      const lines = [...tokens.map(describe), ...unreadable.map(describeUnreadable)];
      printResult(json, unreadable.length === 0 ? tokens : [...tokens, ...unreadable], () => (lines.length === 0 ? '(no tokens)' : lines.join('\n')));
      return;
    }
    case 'revoke': {
      if (argument === undefined || argument === '') throw new TokenUsageError('token revoke needs a token ID (mercury token list shows them)');
      const result = answerObject(await client.revokeToken(argument), 'the revocation');
      printResult(json, result, () =>
        result.damaged === true ? `removed the damaged record ${text(result.id)} at seq ${fieldText(result.seq)}` : `revoked ${text(result.id)} at seq ${fieldText(result.seq)}`,
      );
      return;
    }
    case 'prune': {
      await pruneExpired(client, json);
      return;
    }
    default:
      throw new TokenUsageError(`token needs create, list, revoke or prune, got ${action === undefined ? 'nothing' : `"${action}"`}`);
  }
}
