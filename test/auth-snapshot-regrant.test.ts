/**
 * A token given narrower scopes while a replica is cut off, long enough for the root to trim its log past the replica:
 * the replica gets the new record inside a snapshot, and its token registry reloads. Before, the reload reported only
 * tokens that were gone, so a watch admitted under the old, wider grant stayed open on that replica and went on
 * receiving keys the token may no longer read (review E, finding 05); a replica that applied the record from the log
 * closed it (4409). Now both do.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';
import { request, requestJson, waitUntil } from './support/http.js';
import { startTcpProxy, type TcpProxy } from './support/net.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

interface Status {
  seq: number;
  log: { firstSeq: number };
  replication?: { snapshotsInstalled: number };
}

describe('auth: a regrant that reaches a replica inside a snapshot', () => {
  const dir = makeTempDir('auth-snapshot-regrant');
  const started: ServeProcess[] = [];
  let proxy: TcpProxy | undefined;
  after(async () => {
    for (const node of started) await stopProcess(node.child);
    await proxy?.close();
    removeDir(dir);
  });

  test('auth: a token narrowed while a replica was cut off has its watch there closed (4409) once the snapshot is installed', async () => {
    const root = await startServe(join(dir, 'root'), ['--auth', 'required', '--log-retain-entries', '3']);
    started.push(root);
    const admin = readFileSync(join(dir, 'root', 'admin-token'), 'utf8').trim();
    const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
    const createToken = (name: string, scopes: string[]): Promise<{ id: string; token: string }> =>
      requestJson(root.url, 'POST', '/v1/auth/tokens', { headers: { ...bearer(admin), 'content-type': 'application/json' }, body: JSON.stringify({ name, scopes }) });
    const statusOf = (url: string): Promise<Status> => requestJson<Status>(url, 'GET', '/v1/status', { headers: bearer(admin) });
    const put = (key: string, value: string): Promise<unknown> => requestJson(root.url, 'PUT', `/v1/kv/${key}`, { headers: bearer(admin), body: value });

    const replicate = await createToken('repl', ['replicate']);
    const tokenFile = join(dir, 'repl-token');
    writeFileSync(tokenFile, replicate.token, { mode: 0o600 });
    const wide = await createToken('wide', ['read:']);
    proxy = await startTcpProxy(`tcp://${root.replication}`);
    const replica = await startServe(join(dir, 'replica'), ['--auth', 'required', '--replication-token-file', tokenFile, '--upstream', new URL(proxy.url).host]);
    started.push(replica);
    await put('app/1', 'x');
    // Until its first snapshot the replica knows no token, the admin's included: 401, not yet.
    const joined = async (): Promise<boolean> => (await request(replica.url, 'GET', '/v1/status', { headers: bearer(admin) })).status === 200;
    await waitUntil('replica joined', async () => (await joined()) && (await statusOf(replica.url)).seq === (await statusOf(root.url)).seq);

    const socket = new WebSocket(`${replica.url.replace('http', 'ws')}/v1/watch`, { headers: bearer(wide.token) });
    const messages: Record<string, unknown>[] = [];
    socket.on('message', (data: Buffer) => messages.push(JSON.parse(data.toString()) as Record<string, unknown>));
    const closed = new Promise<number>((resolve) => socket.on('close', (code: number) => resolve(code)));
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send(JSON.stringify({ type: 'subscribe', id: 'all', prefixes: [''] }));
    await waitUntil('subscribed', () => Promise.resolve(messages.some((message) => message.type === 'subscribed')));

    proxy.hold(true);
    // The token's record as committed (the admin's log shows it), given read:app/ only: the same id and secret. Read
    // from the first retained entry: with 3 retained, seq 1 may be trimmed already (410), the token's entry not yet,
    // since only app/1 was written after it.
    const { entries } = await requestJson<{ entries: { ops: { op: string; key: string; keyEncoding: string; value?: string; valueEncoding?: string }[] }[] }>(
      root.url,
      'GET',
      `/v1/log?from=${(await statusOf(root.url)).log.firstSeq}`,
      { headers: bearer(admin) },
    );
    const text = (op: { value?: string; valueEncoding?: string }): string => Buffer.from(op.value!, op.valueEncoding === 'base64' ? 'base64' : 'utf8').toString();
    const op = entries.flatMap((entry) => entry.ops).find((candidate) => candidate.op === 'put' && candidate.value !== undefined && text(candidate).includes('"wide"'))!;
    const record = JSON.parse(text(op)) as Record<string, unknown>;
    await requestJson(root.url, 'POST', '/v1/txn', {
      headers: { ...bearer(admin), 'content-type': 'application/json' },
      body: JSON.stringify({ success: [{ op: 'put', key: op.key, keyEncoding: op.keyEncoding, value: JSON.stringify({ ...record, scopes: ['read:app/'] }) }] }),
    });
    for (let i = 0; i < 8; i++) await put(`app/fill${i}`, 'f');
    const cutAt = (await statusOf(replica.url)).seq;
    await waitUntil('root trimmed past the replica', async () => (await statusOf(root.url)).log.firstSeq > cutAt + 1);
    proxy.hold(false);
    await waitUntil('replica took a snapshot', async () => (await statusOf(replica.url)).seq === (await statusOf(root.url)).seq, 30_000);
    assert.ok((await statusOf(replica.url)).replication!.snapshotsInstalled >= 2);

    const code = await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve('still open after 5 s'), 5_000))]);
    assert.equal(code, 4409);
    await put('secret/db-password', 'hunter2');
    assert.ok(!JSON.stringify(messages).includes('hunter2'));
    socket.close();
  });
});
