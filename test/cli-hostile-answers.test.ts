/**
 * The CLI against answers it cannot trust (found by review): a 200 that is not JSON or has the wrong shape printed a
 * stack trace; key names and a node's messages reached the terminal with their escape sequences; `resync --wait`
 * polled forever a replica that never got back to streaming. Fake nodes on port 0 (node:http) and one real node.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requestJson } from './support/http.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

/** A fake node answering every request with `handler`; closed (with its connections) by the returned function. */
async function fakeNode(handler: Handler): Promise<{ url: string; close: () => void }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

function answer(status: number, body: string): Handler {
  return (_request, response) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(body);
  };
}

async function cliAgainst(handler: Handler, args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string; url: string }> {
  const node = await fakeNode(handler);
  try {
    const result = await runCli([...args, '--url', node.url]);
    return { code: result.code, stdout: result.stdout.toString(), stderr: result.stderr, url: node.url };
  } finally {
    node.close();
  }
}

/** A status answer with the fields the client checks (src/client/answers.ts statusAnswer), then `fields`. */
function statusOf(fields: Record<string, unknown>): Record<string, unknown> {
  const log = { firstSeq: 1, lastSeq: 7, entries: 7, bytes: 700 };
  return { role: 'replica', version: '0.1.0', nodeId: 'n', datasetId: 'd', headHash: '00', seq: 7, keys: 3, log, ...fields };
}

/** ESC, BEL and the 8-bit CSI: what must never reach a terminal from a node. */
function assertNoControls(text: string, what: string): void {
  // eslint-disable-next-line no-control-regex -- the point of the check
  assert.doesNotMatch(text, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/, `${what}: ${JSON.stringify(text)}`);
}

describe('cli hostile answers', () => {
  test('cli hostile answers: a 200 that is not JSON or not of the expected shape is one line naming the command and URL, never a stack', async () => {
    // The client checks every answer's shape (src/client/answers.ts): each is its InvalidAnswerError, exit 3 (no
    // usable node at that URL), one line naming the request, the URL and what was wrong.
    const cases: { args: string[]; body: string; detail: RegExp }[] = [
      { args: ['status'], body: '<html>proxy login</html>', detail: /GET \/v1\/status: .* answered a body that is not JSON/ },
      { args: ['status'], body: 'null', detail: /answer must be a JSON object/ },
      { args: ['log'], body: '{}', detail: /answer\.nextSeq must be an integer/ },
      { args: ['token', 'list'], body: '{}', detail: /answer\.tokens must be an array/ },
      { args: ['token', 'list'], body: JSON.stringify({ tokens: [{ id: 'a', name: 'n' }] }), detail: /answer\.tokens\[0\]\.scopes must be an array/ },
      { args: ['token', 'create', 'x', '--scope', 'admin'], body: '{}', detail: /answer\.scopes must be an array/ },
      { args: ['ls', ''], body: '{}', detail: /answer\.items must be an array/ },
      { args: ['resync'], body: 'OK', detail: /POST \/v1\/replication\/resync: .* answered a body that is not JSON/ },
    ];
    // A protocol switch nobody asked for (audit, 2026-12-06: the command waited out its timeout and exited 0, silent).
    const upgrade: Handler = (_request, response) => void response.socket!.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
    for (const args of [['get', 'k'], ['status'], ['ls', '']]) cases.push({ args, body: '', detail: /answered HTTP 101 \(a protocol switch\) to a request that asked for none/ });
    for (const { args, body, detail } of cases) {
      const result = await cliAgainst(body === '' ? upgrade : answer(200, body), args);
      const what = `mercury ${args.join(' ')} on ${body}`;
      assert.equal(result.code, 3, `${what}: ${result.stderr}`);
      assert.equal(result.stderr.split('\n').length, 2, `${what}: one line: ${result.stderr}`);
      assert.ok(result.stderr.startsWith('mercury: ') && result.stderr.includes(result.url) && result.stderr.includes('not a Mercury answer'), `${what}: ${result.stderr}`);
      assert.doesNotMatch(result.stderr, /\n\s+at /, `${what}: no stack`);
      assert.match(result.stderr, detail, what);
    }
  });

  test('cli hostile answers: a log entry with an impossible time or missing fields prints with ? in their place', async () => {
    const page = { firstSeq: 1, lastSeq: 2, nextSeq: null, entries: [{ seq: 1, timeMs: 1e20, ops: [], signature: null, hash: 'x' }, { seq: 2 }] };
    const result = await cliAgainst(answer(200, JSON.stringify(page)), ['log']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'seq 1  ?  0 ops  by ?  unsigned  hash x\nseq 2  ?  ? ops  by ?  signature ?  hash ?\n');
  });

  test('cli hostile answers: escape sequences in a node error, status fields and token names are shown escaped', async () => {
    const escapes = 'x\u001b[2J\u001b]0;owned\u0007\u009b1A';
    const error = await cliAgainst(answer(500, JSON.stringify({ error: { code: 'INTERNAL', message: escapes } })), ['status']);
    assert.equal(error.code, 1);
    assertNoControls(error.stderr.slice(0, -1), 'error line');
    assert.equal(error.stderr, 'mercury: INTERNAL: x\\u001b[2J\\u001b]0;owned\\u0007\\u009b1A\n');

    const status = await cliAgainst(answer(200, JSON.stringify(statusOf({ role: escapes, replication: { listen: escapes, phase: escapes, children: [null, { nodeId: escapes }] } }))), ['status']);
    assert.equal(status.code, 0, status.stderr);
    assertNoControls(status.stdout.replaceAll('\n', ''), 'status');
    assert.match(status.stdout, /^role +x\\u001b\[2J/m);

    const tokens = { seq: 3, tokens: [{ id: 't1', name: escapes, scopes: [escapes], createdMs: 0, kind: 'token' }] };
    const list = await cliAgainst(answer(200, JSON.stringify(tokens)), ['token', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assertNoControls(list.stdout.replaceAll('\n', ''), 'token list');
    const json = await cliAgainst(answer(200, JSON.stringify(tokens)), ['token', 'list', '--json']);
    assertNoControls(json.stdout.replaceAll('\n', ''), 'token list --json');
    assert.deepEqual(JSON.parse(json.stdout), tokens.tokens, '--json means the same, only escaped');
  });

  // Found by an audit (2026-12-06): terminalSafe leaves line breaks alone, so a field holding one printed a line of the
  // node's choosing.
  test('cli hostile answers: a line break in a node\'s field is shown as \\n: no line of the node\'s choosing', async () => {
    const forged = 'root\nmercury: OK, all replicas in sync\r';
    const status = await cliAgainst(answer(200, JSON.stringify(statusOf({ role: forged, [forged]: 1, replication: { phase: forged, lastFailure: forged } }))), ['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.doesNotMatch(status.stdout, /^mercury: OK/m);
    assert.match(status.stdout, /^role +root\\nmercury: OK, all replicas in sync\\r$/m);
    const tokens = { seq: 3, tokens: [{ id: 't1', name: forged, scopes: ['read:'], createdMs: 0, kind: 'token' }] };
    const list = await cliAgainst(answer(200, JSON.stringify(tokens)), ['token', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.doesNotMatch(list.stdout, /^mercury: OK/m);
    const entry = { seq: 1, timeMs: 0, prevHash: '00', hash: '11', ops: [], authors: [{ author: forged, ops: 1 }], signature: null };
    const log = await cliAgainst(answer(200, JSON.stringify({ entries: [entry], firstSeq: 1, lastSeq: 1, nextSeq: 2, more: false })), ['log']);
    assert.doesNotMatch(log.stdout, /^mercury: OK/m, log.stdout + log.stderr);
  });

  test('cli hostile answers: resync --wait gives up with RESYNC_STALLED when the replica shows no progress for --wait-timeout-ms', async () => {
    const started = Date.now();
    const result = await cliAgainst((request, response) => {
      response.writeHead(request.method === 'POST' ? 202 : 200, { 'content-type': 'application/json' });
      if (request.method === 'POST') response.end(JSON.stringify({ resync: 'started', seq: 7 }));
      else response.end(JSON.stringify(statusOf({ seq: 7, keys: 3, replication: { phase: 'connecting', snapshotsInstalled: 1, resyncPending: true, lastFailure: 'connect ECONNREFUSED 127.0.0.1:9' } })));
    }, ['resync', '--wait', '--wait-timeout-ms', '1000']);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^mercury: RESYNC_STALLED: the replica at http:\/\/127\.0\.0\.1:\d+ showed no progress for [\d.]+ s \(phase connecting, last failure: connect ECONNREFUSED 127\.0\.0\.1:9\); .*--wait-timeout-ms\n$/);
    assert.ok(Date.now() - started < 10_000);
  });

  describe('against a real node', () => {
    let dir: string;
    let node: ServeProcess;

    before(async () => {
      dir = makeTempDir('cli-hostile');
      node = await startServe(join(dir, 'node'));
    });

    after(async () => {
      await stopProcess(node.child);
      removeDir(dir);
    });

    test('cli hostile answers: ls shows a key holding escape sequences as watch does, as a JSON string', async () => {
      const key = 'cfg/\u001b]0;PWNED\u0007\u001b[2J\u009b31m';
      await requestJson(node.url, 'PUT', `/v1/kv/${encodeURIComponent(key)}`, { body: 'v' });
      await requestJson(node.url, 'PUT', '/v1/kv/cfg/plain', { body: 'v' });
      const ls = await runCli(['ls', 'cfg/', '--url', node.url]);
      assert.equal(ls.code, 0, ls.stderr);
      const lines = ls.stdout.toString().split('\n');
      assert.equal(lines[0], '"cfg/\\u001b]0;PWNED\\u0007\\u001b[2J\\u009b31m"\t1 B\tmodSeq 1\tversion 1');
      assert.equal(lines[1], 'cfg/plain\t1 B\tmodSeq 2\tversion 1');
      const json = await runCli(['ls', 'cfg/', '--json', '--url', node.url]);
      assertNoControls(json.stdout.toString().replaceAll('\n', ''), 'ls --json');
      assert.equal((JSON.parse(json.stdout.toString().split('\n')[0]!) as { key: string }).key, key);
    });
  });
});
