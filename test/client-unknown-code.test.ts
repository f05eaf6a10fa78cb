/**
 * An error code this client does not know, from a fake node on port 0 that plays a newer node: the caller sees the
 * node's code, message, status and details (`UnknownCodeError`), never `INTERNAL`, and the CLI prints the code as the
 * node sent it. An error body that is not a Mercury error (not JSON, a code that is not a short UPPER_SNAKE name, a
 * message missing or huge) is `InvalidAnswerError` (`PROTOCOL`), bounded, and fails over like any answer that is not
 * Mercury's. Before: both became `NodeFailedError` `INTERNAL`, the newer node's code kept only in `details`.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { connect, InvalidAnswerError, MercuryError, NodeClient, OutcomeUnknownError, ServerError, UnknownCodeError } from '../src/index.js';
import { startFakeServer, type FakeServer } from './support/net.js';
import { runCli } from './support/process.js';

/** What the fake node answers to every request. */
type Answer = (res: ServerResponse) => void;

function errorAnswer(status: number, body: string, headers: Record<string, string> = {}): Answer {
  return (res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(body);
  };
}

/** The error body a newer node sends for a code of its own. */
const QUOTA = JSON.stringify({ error: { code: 'QUOTA_EXCEEDED', message: 'the prefix a/ holds its 100 keys; delete some first', limit: 100 } });

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (result) => assert.fail(`resolved with ${JSON.stringify(result)}`),
    (error: unknown) => error,
  );
}

describe('client unknown code', () => {
  let server: FakeServer;
  let answer: Answer = errorAnswer(429, QUOTA);

  before(async () => {
    server = await startFakeServer((_req, res) => answer(res));
  });

  after(async () => {
    await server.close();
  });

  test('client unknown code: a code a newer node added keeps its code, message, status and details', async () => {
    answer = errorAnswer(429, QUOTA, { 'retry-after': '3' });
    for (const call of [() => new NodeClient(server.url).put('a/k', 'v'), () => new NodeClient(server.url).status(), () => connect(server.url).put('a/k', 'v')]) {
      const error = await caught(call());
      assert.ok(error instanceof UnknownCodeError, String(error));
      assert.ok(error instanceof ServerError && error instanceof MercuryError);
      assert.equal(error.code, 'QUOTA_EXCEEDED');
      assert.notEqual(error.name, 'NodeFailedError');
      assert.equal(error.status, 429);
      assert.equal(error.message, 'the prefix a/ holds its 100 keys; delete some first');
      assert.equal(error.details?.limit, 100);
      assert.equal(error.retryAfterMs, 3_000);
    }
  });

  test('client unknown code: an error body that is not a Mercury error is InvalidAnswerError PROTOCOL naming the fault', async () => {
    const bodies: [string, RegExp][] = [
      ['<html>502 Bad Gateway</html>', /HTTP 502 with a body that is not JSON/],
      ['null', /without an "error" object/],
      [JSON.stringify({ error: 'QUOTA_EXCEEDED' }), /without an "error" object/],
      [JSON.stringify({ error: { code: 42, message: 'm' } }), /an error code that is not an UPPER_SNAKE name/],
      [JSON.stringify({ error: { code: 'quota exceeded', message: 'm' } }), /an error code that is not an UPPER_SNAKE name/],
      [JSON.stringify({ error: { code: 'X\u001b[2J', message: 'm' } }), /an error code that is not an UPPER_SNAKE name/],
      [JSON.stringify({ error: { code: 'Q'.repeat(65), message: 'm' } }), /at most 64 characters/],
      [JSON.stringify({ error: { code: 'QUOTA_EXCEEDED' } }), /an error message that is not a string/],
      [JSON.stringify({ error: { code: 'QUOTA_EXCEEDED', message: 'm'.repeat(40_000) } }), /an error message that is not a string of at most 16384 characters/],
    ];
    for (const [body, why] of bodies) {
      answer = errorAnswer(502, body);
      for (const call of [() => new NodeClient(server.url).status(), () => new NodeClient(server.url).stream('/v1/snapshot')]) {
        const error = await caught(call());
        assert.ok(error instanceof InvalidAnswerError, `${body.slice(0, 80)}: ${String(error)}`);
        assert.equal(error.code, 'PROTOCOL');
        assert.match(error.message, why);
        assert.match(error.message, /not a Mercury answer/);
        assert.ok(error.message.length < 1_024, `a bounded message (${error.message.length} characters)`);
      }
    }
  });

  test('client unknown code: a write answered with a body that is not a Mercury error is OutcomeUnknownError, not the node\'s word', async () => {
    answer = errorAnswer(500, '<html>Internal Server Error</html>');
    const error = await caught(connect(server.url).put('k', 'v'));
    assert.ok(error instanceof OutcomeUnknownError, String(error));
    assert.match(error.message, /HTTP 500 with a body that is not JSON/);
  });

  test('client unknown code: the CLI prints a code it does not know as the node sent it, and a malformed one as not Mercury\'s', async () => {
    answer = errorAnswer(429, QUOTA);
    const unknown = await runCli(['put', 'a/k', 'v', '--url', server.url]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, 'mercury: QUOTA_EXCEEDED: the prefix a/ holds its 100 keys; delete some first\n');
    answer = errorAnswer(502, JSON.stringify({ error: { code: 'X\u001b[2J', message: 'm' } }));
    const malformed = await runCli(['get', 'a/k', '--url', server.url]);
    assert.equal(malformed.code, 3);
    assert.match(malformed.stderr, /^mercury: GET \/v1\/kv\/a\/k: http:\/\/127\.0\.0\.1:\d+ answered HTTP 502 with an error code that is not an UPPER_SNAKE name/);
    assert.doesNotMatch(malformed.stderr, /INTERNAL/);
    assert.ok(!malformed.stderr.includes('\u001b'), 'no escape of the node\'s reaches the terminal');
  });
});
