/**
 * A token revoked while a request it made is under way, on a real `mercury serve --auth required`: the request was
 * authenticated from its headers, then its body took its time to arrive (up to the request timeout), or it waited for
 * `minSeq`. Before, the credential was not looked at again: a leaked token revoked meanwhile still wrote (a PUT, a
 * transaction, even a new token with an admin's), and a parked read answered with data committed after the revocation.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { encodeGet } from '../src/api/index.js';
import { TOKEN_KEY_PREFIX, tokenNameKey } from '../src/auth/index.js';
import { parseRawResponse, request, requestJson, type RawResponse } from './support/http.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { RawWire } from './support/wire.js';
import WebSocket from 'ws';

/** A raw HTTP exchange whose body (if any) is sent only when the test says so. */
function begin(baseUrl: string, head: string): { send(body: string): void; answer: Promise<RawResponse>; close(): void } {
  const url = new URL(baseUrl);
  const socket: Socket = connect(Number(url.port), url.hostname);
  socket.on('error', () => {});
  socket.write(head);
  let text = '';
  const answer = new Promise<RawResponse>((resolve, reject) => {
    socket.on('data', (data: Buffer) => {
      text += data.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
      if (end > 0 && length !== null && text.length >= end + 4 + Number(length[1])) resolve(parseRawResponse(text.slice(0, end + 4 + Number(length[1]))));
    });
    socket.once('close', () => reject(new Error(`closed without an answer: ${JSON.stringify(text.slice(0, 200))}`)));
  });
  answer.catch(() => {});
  return { send: (body) => socket.write(body), answer, close: () => socket.destroy() };
}

function codeOf(response: RawResponse): string {
  return (JSON.parse(response.body) as { error: { code: string } }).error.code;
}

describe('a token revoked while its request is under way', () => {
  const dir = makeTempDir('auth-midway');
  let node: ServeProcess;
  let admin: string;
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

  const createToken = (name: string, scopes: string[]): Promise<{ id: string; token: string }> =>
    requestJson(node.url, 'POST', '/v1/auth/tokens', { headers: { ...bearer(admin), 'content-type': 'application/json' }, body: JSON.stringify({ name, scopes }) });
  const revoke = (id: string): Promise<{ seq: number }> => requestJson(node.url, 'DELETE', `/v1/auth/tokens?id=${id}`, { headers: bearer(admin) });
  const put = (key: string, value: string): Promise<{ seq: number }> => requestJson(node.url, 'PUT', `/v1/kv/${key}`, { headers: bearer(admin), body: value });
  const head = async (): Promise<number> => (await requestJson<{ seq: number }>(node.url, 'GET', '/v1/status', { headers: bearer(admin) })).seq;
  const statusOf = async (key: string): Promise<number> => (await request(node.url, 'GET', `/v1/kv/${key}`, { headers: bearer(admin) })).status;
  /**
   * Replaces a token's committed record (found in the admin's log) with `changes` through POST /v1/txn: same id. A
   * rename (`changes.name`) moves the name's index key in the same transaction, with a compare that the new one is
   * absent (decision 57).
   */
  const replaceRecord = async (name: string, changes: Record<string, unknown>): Promise<void> => {
    const { entries } = await requestJson<{ entries: { ops: { op: string; key: string; keyEncoding: string; value?: string; valueEncoding?: string }[] }[] }>(node.url, 'GET', '/v1/log?from=1', { headers: bearer(admin) });
    const valueOf = (candidate: { value?: string; valueEncoding?: string }): string => Buffer.from(candidate.value ?? '', candidate.valueEncoding === 'base64' ? 'base64' : 'utf8').toString();
    const op = entries.flatMap((entry) => entry.ops).find((candidate) => candidate.op === 'put' && valueOf(candidate).includes(`"name":"${name}"`))!;
    const record = JSON.parse(valueOf(op)) as Record<string, unknown>;
    const put = { op: 'put', key: op.key, keyEncoding: op.keyEncoding, value: JSON.stringify({ ...record, ...changes }) };
    const renamed = typeof changes.name === 'string' && changes.name !== name ? changes.name : undefined;
    const id = Buffer.from(op.key, op.keyEncoding === 'base64' ? 'base64' : 'utf8').subarray(TOKEN_KEY_PREFIX.length).toString('latin1');
    const moved =
      renamed === undefined
        ? {}
        : {
            compare: [{ keyBase64: tokenNameKey(renamed).toString('base64'), exists: false }],
            success: [put, { op: 'put', keyBase64: tokenNameKey(renamed).toString('base64'), value: id }, { op: 'delete', keyBase64: tokenNameKey(name).toString('base64') }],
          };
    await requestJson(node.url, 'POST', '/v1/txn', {
      headers: { ...bearer(admin), 'content-type': 'application/json' },
      body: JSON.stringify({ success: [put], ...moved }),
    });
  };
  /** `answer`, or a rejection once `ms` passed: a parked read answered only at its timeout (20 s) fails the test. */
  const within = <T>(answer: Promise<T>, ms: number, what: string): Promise<T> =>
    Promise.race([answer, new Promise<T>((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms))]);
  const headOf = (method: string, path: string, token: string, bodyBytes: number, type = 'application/octet-stream'): string =>
    `${method} ${path} HTTP/1.1\r\nHost: ${new URL(node.url).host}\r\nAuthorization: Bearer ${token}\r\nContent-Type: ${type}\r\nContent-Length: ${bodyBytes}\r\n\r\n`;

  /** A watch opened with `token`: every message it was sent, and its close code and reason once closed. */
  interface Watcher {
    socket: WebSocket;
    messages: Record<string, unknown>[];
    closed: Promise<number>;
    reason: () => string;
  }
  const openWatch = async (token: string): Promise<Watcher> => {
    const socket = new WebSocket(`${node.url.replace('http', 'ws')}/v1/watch`, { headers: bearer(token) });
    const messages: Record<string, unknown>[] = [];
    socket.on('message', (data: Buffer) => messages.push(JSON.parse(data.toString()) as Record<string, unknown>));
    let reason = '';
    const closed = new Promise<number>((resolve) =>
      socket.on('close', (code: number, why: Buffer) => {
        reason = why.toString();
        resolve(code);
      }),
    );
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    return { socket, messages, closed, reason: () => reason };
  };
  /** The first of `messages` that passes `test`, waiting up to 10 s for it. */
  const until = async (messages: Record<string, unknown>[], test: (message: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
    for (let i = 0; i < 1_000; i++) {
      const found = messages.find(test);
      if (found !== undefined) return found;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`no such message: ${JSON.stringify(messages)}`);
  };
  /** An event for `key` in the events messages of `id`. */
  const hasEvent = (id: string, key: string) => (message: Record<string, unknown>): boolean =>
    message.type === 'events' && message.id === id && JSON.stringify(message.events).includes(JSON.stringify(key));

  before(async () => {
    node = await startServe(join(dir, 'node'), ['--auth', 'required']);
    admin = readFileSync(join(dir, 'node', 'admin-token'), 'utf8').trim();
  });
  after(async () => {
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('a PUT, a transaction and a token creation whose bodies arrive after the revocation write nothing', async () => {
    const leaked = await createToken('leaked', ['write:app/', 'read:app/']);
    const leakedAdmin = await createToken('leaked-admin', ['admin']);
    const value = 'attacker-value';
    const txnBody = JSON.stringify({ success: [{ op: 'put', key: 'app/other', value: 'attacker-txn' }] });
    const tokenBody = JSON.stringify({ name: 'backdoor', scopes: ['admin'] });
    const putting = begin(node.url, headOf('PUT', '/v1/kv/app/config', leaked.token, value.length));
    const txn = begin(node.url, headOf('POST', '/v1/txn', leaked.token, txnBody.length, 'application/json'));
    const creating = begin(node.url, headOf('POST', '/v1/auth/tokens', leakedAdmin.token, tokenBody.length, 'application/json'));
    // The headers are in, and admitted: nothing is answered before the bodies.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await revoke(leaked.id);
    await revoke(leakedAdmin.id);
    putting.send(value);
    txn.send(txnBody);
    creating.send(tokenBody);
    for (const exchange of [putting, txn, creating]) {
      const answer = await exchange.answer;
      assert.equal(answer.status, 401, answer.body);
      assert.equal(codeOf(answer), 'UNAUTHENTICATED');
      exchange.close();
    }
    assert.equal(await statusOf('app/config'), 404);
    assert.equal(await statusOf('app/other'), 404);
    const { tokens } = await requestJson<{ tokens: { name: string }[] }>(node.url, 'GET', '/v1/auth/tokens', { headers: bearer(admin) });
    assert.ok(!tokens.some((token) => token.name === 'backdoor'), 'no token was created with the revoked one');
  });

  test('reads parked on minSeq (a key, a range, the wire port) are refused once their token was revoked meanwhile', async () => {
    const reader = await createToken('reader', ['read:app/']);
    await put('app/secret', 'old-secret');
    const target = (await head()) + 2; // the revocation, then the new secret
    const key = begin(node.url, `GET /v1/kv/app/secret?minSeq=${target}&timeoutMs=20000 HTTP/1.1\r\nHost: ${new URL(node.url).host}\r\nAuthorization: Bearer ${reader.token}\r\n\r\n`);
    const range = begin(node.url, `GET /v1/kv?prefix=app%2F&minSeq=${target}&timeoutMs=20000 HTTP/1.1\r\nHost: ${new URL(node.url).host}\r\nAuthorization: Bearer ${reader.token}\r\n\r\n`);
    const wire = await RawWire.ready(node.wire, reader.token);
    wire.send(encodeGet(7, Buffer.from('app/secret'), { seq: target, timeoutMs: 20_000 }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await revoke(reader.id);
    await put('app/secret', 'ROTATED-secret');
    for (const exchange of [key, range]) {
      const answer = await exchange.answer;
      assert.equal(answer.status, 401, answer.body);
      assert.ok(!answer.body.includes('ROTATED'), answer.body);
      exchange.close();
    }
    // The wire connection is closed for the revoked token; whatever it was sent before, the new secret is not in it.
    const frames = [];
    for (let frame = await wire.next(); frame !== undefined; frame = await wire.next()) frames.push(frame);
    assert.ok(frames.every((frame) => frame.type !== 0x82), `no VALUE frame: ${JSON.stringify(frames.map((frame) => frame.type))}`);
    wire.close();
  });

  test('reads parked on minSeq end at once when their token is narrowed past them or given a new secret; a read still allowed waits on', async () => {
    const reader = await createToken('narrowed-reader', ['read:app/', 'read:other/']);
    const host = new URL(node.url).host;
    const get = (path: string, token: string): ReturnType<typeof begin> => begin(node.url, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${token}\r\n\r\n`);
    const target = (await head()) + 2; // the narrowing, then a put of other/still
    const key = get(`/v1/kv/app/secret?minSeq=${target}&timeoutMs=20000`, reader.token);
    const range = get(`/v1/kv?prefix=app%2F&minSeq=${target}&timeoutMs=20000`, reader.token);
    const allowed = get(`/v1/kv/other/still?minSeq=${target}&timeoutMs=20000`, reader.token);
    const wire = await RawWire.ready(node.wire, reader.token);
    wire.send(encodeGet(7, Buffer.from('app/secret'), { seq: target, timeoutMs: 20_000 }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Same id and secret, read:other/ only: app/ is outside it now.
    await replaceRecord('narrowed-reader', { scopes: ['read:other/'] });
    for (const exchange of [key, range]) {
      const answer = await within(exchange.answer, 5_000, 'a narrowed read');
      assert.equal(answer.status, 403, answer.body);
      assert.equal(codeOf(answer), 'PERMISSION_DENIED');
      exchange.close();
    }
    const denied = await wire.next();
    assert.deepEqual([denied?.id, RawWire.code(denied)], [7, 'PERMISSION_DENIED'], RawWire.message(denied));
    // The wire connection goes on under the new scopes.
    wire.send(encodeGet(8, Buffer.from('other/still')));
    assert.equal((await wire.next())?.id, 8);
    wire.close();
    // The read the new scopes still allow was left waiting, and is served once its seq is applied.
    await put('other/still', 'kept');
    const served = await within(allowed.answer, 5_000, 'a read still allowed');
    assert.equal(served.status, 200, served.body);
    assert.equal(served.body, 'kept');
    allowed.close();

    const rotated = await createToken('rotated-reader', ['read:app/']);
    const later = (await head()) + 2;
    const parked = get(`/v1/kv/app/secret?minSeq=${later}&timeoutMs=20000`, rotated.token);
    const rotatedWire = await RawWire.ready(node.wire, rotated.token);
    rotatedWire.send(encodeGet(9, Buffer.from('app/secret'), { seq: later, timeoutMs: 20_000 }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await replaceRecord('rotated-reader', { secretSha256: 'ab'.repeat(32) });
    const refused = await within(parked.answer, 5_000, 'a read whose token was given a new secret');
    assert.equal(refused.status, 401, refused.body);
    assert.match(codeOf(refused), /UNAUTHENTICATED/);
    parked.close();
    const answered = await rotatedWire.next();
    assert.deepEqual([answered?.id, RawWire.code(answered)], [9, 'UNAUTHENTICATED'], RawWire.message(answered));
    rotatedWire.close();
  });

  test('a token given narrower scopes: its open watch is closed (4409), and resubscribing is checked against them', async () => {
    const wide = await createToken('wide', ['read:']);
    const open = (): Promise<Watcher> => openWatch(wide.token);
    const first = await open();
    first.socket.send(JSON.stringify({ type: 'subscribe', id: 'all', prefixes: [''] }));
    await until(first.messages, (message) => message.type === 'subscribed');
    await replaceRecord('wide', { scopes: ['read:app/'] });
    const code = await Promise.race([first.closed, new Promise((resolve) => setTimeout(() => resolve('still open after 5 s'), 5_000))]);
    assert.equal(code, 4409);
    assert.match(first.reason(), /was given another grant/);
    await put('secret/db-password', 'hunter2');
    assert.ok(!JSON.stringify(first.messages).includes('hunter2'));
    // The same token reconnects: a subscription outside its new scopes is refused, one inside them is served.
    const again = await open();
    again.socket.send(JSON.stringify({ type: 'subscribe', id: 'secret', prefixes: ['secret/'] }));
    again.socket.send(JSON.stringify({ type: 'subscribe', id: 'app', prefixes: ['app/'] }));
    const refused = await until(again.messages, (message) => message.type === 'error' && message.id === 'secret');
    assert.equal(refused.code, 'PERMISSION_DENIED');
    await until(again.messages, (message) => message.type === 'subscribed' && message.id === 'app');
    // Given a new secret: the watch is closed saying so, and the old secret is refused at the upgrade.
    await replaceRecord('wide', { scopes: ['read:app/'], secretSha256: 'ab'.repeat(32) });
    assert.equal(await Promise.race([again.closed, new Promise((resolve) => setTimeout(() => resolve('still open after 5 s'), 5_000))]), 4409);
    assert.match(again.reason(), /secret/);
    await assert.rejects(open(), /401/);
  });

  // Decision 57: before, any change of a token's record closed all its watches, a widening or a rename too.
  test('a token given wider scopes, or renamed: its open watch goes on under the new grant; narrowed past it, it is closed (4409)', async () => {
    const growing = await createToken('growing', ['read:app/']);
    const watcher = await openWatch(growing.token);
    let closedYet = false;
    void watcher.closed.then(() => (closedYet = true));
    watcher.socket.send(JSON.stringify({ type: 'subscribe', id: 'app', prefixes: ['app/'] }));
    await until(watcher.messages, (message) => message.type === 'subscribed' && message.id === 'app');
    // Outside its scopes: refused, the connection stays.
    watcher.socket.send(JSON.stringify({ type: 'subscribe', id: 'early', prefixes: ['other/'] }));
    assert.equal((await until(watcher.messages, (message) => message.type === 'error' && message.id === 'early')).code, 'PERMISSION_DENIED');

    await replaceRecord('growing', { scopes: ['read:app/', 'read:other/'] });
    await put('app/after-widening', 'a');
    await until(watcher.messages, hasEvent('app', 'app/after-widening'));
    assert.equal(closedYet, false, `closed: ${watcher.reason()}`);
    // The wider grant applies to the connection from then on.
    watcher.socket.send(JSON.stringify({ type: 'subscribe', id: 'other', prefixes: ['other/'] }));
    await until(watcher.messages, (message) => message.type === 'subscribed' && message.id === 'other');

    await replaceRecord('growing', { name: 'grown', scopes: ['read:app/', 'read:other/'] });
    await put('other/after-rename', 'b');
    await until(watcher.messages, hasEvent('other', 'other/after-rename'));
    assert.equal(closedYet, false, `closed: ${watcher.reason()}`);
    // Its subscriptions keep what they were subscribed with: no entry hashes, the token never read every key.
    assert.ok(watcher.messages.every((message) => message.hash === undefined), JSON.stringify(watcher.messages));

    // Narrowed past one of its subscriptions: the watch is closed, and sees nothing written after.
    await replaceRecord('grown', { scopes: ['read:app/'] });
    assert.equal(await within(watcher.closed, 5_000, 'a watch narrowed past its subscription'), 4409);
    assert.match(watcher.reason(), /was given another grant \(its scopes no longer cover this watch\)/);
    await put('other/after-narrowing', 'c');
    assert.ok(!JSON.stringify(watcher.messages).includes('after-narrowing'));
  });
});
