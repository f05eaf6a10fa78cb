/**
 * Entry hashes go only to tokens that may read every key. An entry's hash is SHA-256 of the previous hash and the
 * entry's body, which holds every op of the entry, so two consecutive hashes let anyone test guesses of what an entry
 * wrote, offline. Found by audit (stop 37): a `read:app/` token watching `app/` got the hash of an entry that also
 * wrote `secret/flag`, and of the entry before, and confirmed the guessed value "on" in 12 tries; from status polls
 * alone it found a 4-digit `secret/pin` in 21 s. The attack is reproduced here: the guess is confirmed with what an
 * admin sees, and the narrow token is shown no hash to test it with. In-process node on loopback, auth required.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { validateConfig } from '../src/config/index.js';
import { sealEntry } from '../src/log/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { WatchClient, type ServerMessage } from './support/watch.js';

describe('auth: entry hashes only for tokens that read every key', () => {
  const dir = makeTempDir('auth-chain-hashes');
  let node: MercuryNode;
  let admin: string;
  let narrow: string;
  let everything: string;
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

  before(async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), host: '127.0.0.1', port: 0 }), { auth: 'required', limits: NODE_LIMITS_TEST });
    admin = readFileSync(join(dir, 'node', 'admin-token'), 'utf8').trim();
    const client = new NodeClient(node.url, 5_000, undefined, `Bearer ${admin}`);
    narrow = (await client.createToken('app', ['read:app/', 'write:app/'])).token!;
    everything = (await client.createToken('reader', ['read:'])).token!;
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  test('auth: a narrow token gets no headHash, no write hash and no watch hash; afterHash is refused; wider tokens get them', async () => {
    const watch = await WatchClient.connect(node.url, undefined, bearer(narrow));
    const subscribed = await watch.subscribe('w', ['app/']);
    assert.equal(subscribed.type, 'subscribed', JSON.stringify(subscribed));
    const adminWatch = await WatchClient.connect(node.url, undefined, bearer(admin));
    await adminWatch.subscribe('all', ['']);

    const before = await requestJson<{ seq: number; headHash: string }>(node.url, 'GET', '/v1/status', { headers: bearer(admin) });
    // The audit's entry: one op in the narrow token's scope, one outside it.
    const txn = { success: [{ op: 'put', key: 'app/x', value: 'mixed' }, { op: 'put', key: 'secret/flag', value: 'on' }] };
    const { seq } = await requestJson<{ seq: number }>(node.url, 'POST', '/v1/txn', { body: JSON.stringify(txn), headers: { ...bearer(admin), 'content-type': 'application/json' } });
    await watch.waitForSeq('w', seq);
    await adminWatch.waitForSeq('all', seq);

    // What the attack needs, shown to the admin: the entry's hash and the one before confirm the guess "on".
    const adminEvents = adminWatch.eventsOf('all');
    const entry = adminEvents.find((message) => message.seq === seq)!;
    assert.equal(seq, before.seq + 1);
    const previous = { hash: before.headHash };
    const guess = (value: string): string =>
      sealEntry(
        { seq, timeMs: entry.timeMs, ops: [{ type: 'put', key: Buffer.from('app/x'), value: Buffer.from('mixed') }, { type: 'put', key: Buffer.from('secret/flag'), value: Buffer.from(value) }], authors: [{ author: 'admin', opCount: 2 }] },
        Buffer.from(previous.hash, 'hex'),
        undefined,
      ).entry.hash.toString('hex');
    assert.equal(guess('on'), entry.hash, 'with the hashes, the right guess is confirmed');
    assert.notEqual(guess('off'), entry.hash);

    // The narrow token saw the entry's app/x event, and no hash in any message.
    const narrowMessages = watch.of('w') as (ServerMessage & { hash?: string })[];
    assert.ok(watch.eventsOf('w').some((message) => message.seq === seq), 'the in-scope event arrived');
    assert.deepEqual(narrowMessages.filter((message) => message.hash !== undefined), [], 'no message carries a hash');
    const status = (token: string) => requestJson<{ headHash: string | null }>(node.url, 'GET', '/v1/status', { headers: bearer(token) });
    assert.equal((await status(narrow)).headHash, null);
    assert.match((await status(everything)).headHash ?? '', /^[0-9a-f]{64}$/);
    assert.match((await status(admin)).headHash ?? '', /^[0-9a-f]{64}$/);
    const write = (token: string) =>
      requestJson<{ seq: number; hash?: string }>(node.url, 'POST', '/v1/txn', { body: JSON.stringify({ success: [{ op: 'put', key: 'app/y', value: 'v' }] }), headers: { ...bearer(token), 'content-type': 'application/json' } });
    assert.equal((await write(narrow)).hash, undefined);
    assert.match((await write(admin)).hash ?? '', /^[0-9a-f]{64}$/);
    // The client library reads a status without a headHash.
    assert.equal((await new NodeClient(node.url, 5_000, undefined, `Bearer ${narrow}`).status()).headHash, null);

    // Resuming with a hash would make the node compare it with its own: refused, saying how to resume.
    const refused = await watch.subscribe('resume', ['app/'], { fromSeq: seq, afterHash: previous.hash });
    assert.equal(refused.type, 'error', JSON.stringify(refused));
    assert.match(JSON.stringify(refused), /PERMISSION_DENIED.*afterHash.*needs a token that reads every key/);
    const resumed = await watch.subscribe('from', ['app/'], { fromSeq: seq });
    assert.equal(resumed.type, 'subscribed');
    await watch.waitForSeq('from', seq);
    assert.deepEqual((watch.of('from') as { hash?: string }[]).filter((message) => message.hash !== undefined), []);

    // A token that reads every key is shown the chain, as the admin is.
    const wide = await WatchClient.connect(node.url, undefined, bearer(everything));
    await wide.subscribe('e', [''], { fromSeq: seq });
    await wide.waitForSeq('e', seq);
    assert.equal(wide.eventsOf('e').find((message) => message.seq === seq)?.hash, entry.hash);
    for (const client of [watch, adminWatch, wide]) client.close();
  });
});
