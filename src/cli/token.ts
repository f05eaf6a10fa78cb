/**
 * `mercury token create NAME --scope S [--scope S...] [--subject CN] | list | revoke ID`: token management against a
 * node's admin routes (`/v1/auth/tokens`), with an admin token. `create` prints the secret once: the node keeps only
 * its hash. With --json each command prints one JSON object.
 */
import type { NodeClient, TokenInfo } from '../client/index.js';

export class TokenUsageError extends Error {}

function describe(token: TokenInfo): string {
  const who = token.kind === 'certificate' ? `certificate CN=${token.subject ?? '?'}` : 'token';
  return `${token.id}  ${token.name.padEnd(20)}  ${who}  ${token.scopes.join(' ')}  created ${new Date(token.createdMs).toISOString()}`;
}

export async function tokenCommand(client: NodeClient, args: readonly string[], scopes: readonly string[], subject: string | undefined, json: boolean): Promise<void> {
  const [action, argument] = args;
  const out = (value: unknown, human: string): void => {
    process.stdout.write(`${json ? JSON.stringify(value) : human}\n`);
  };
  switch (action) {
    case 'create': {
      if (argument === undefined || argument === '') throw new TokenUsageError('token create needs a NAME');
      if (scopes.length === 0) throw new TokenUsageError('token create needs at least one --scope (read:PREFIX, write:PREFIX, replicate, admin)');
      const created = await client.createToken(argument, scopes, { subject });
      const human =
        created.token === undefined
          ? `granted ${created.scopes.join(' ')} to client certificates with subject CN=${created.subject ?? '?'} (id ${created.id})`
          : `${created.token}\n\ntoken ${created.id} "${created.name}" with ${created.scopes.join(' ')}.\nThis is the only time the secret is shown: store it now (for example in a file, mode 0600, for --token-file).`;
      out(created, human);
      return;
    }
    case 'list': {
      const { tokens } = await client.listTokens();
      out(tokens, tokens.length === 0 ? '(no tokens)' : tokens.map(describe).join('\n'));
      return;
    }
    case 'revoke': {
      if (argument === undefined || argument === '') throw new TokenUsageError('token revoke needs a token ID (mercury token list shows them)');
      const result = await client.revokeToken(argument);
      out(result, `revoked ${result.id} at seq ${result.seq}`);
      return;
    }
    default:
      throw new TokenUsageError(`token needs create, list or revoke, got ${action === undefined ? 'nothing' : `"${action}"`}`);
  }
}
