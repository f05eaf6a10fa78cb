/**
 * TypeScript client: a caller's mistakes. Arguments of the wrong type or range are refused before anything is sent,
 * with `ClientOptionsError` (CONFIG_INVALID), alike over HTTP and the wire port, against a real node on port 0; none
 * of them hangs, writes, or throws out of a socket's handler (which ends the process).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClientOptionsError, MercuryNode, NODE_LIMITS_TEST, NodeClient, cmp, connect, op, openLocal, validateConfig } from '../src/index.js';
import { makeTempDir, removeDir } from './support/process.js';

function isOptionsError(pattern: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof ClientOptionsError, `${String(error)}`);
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.match(error.message, pattern);
    return true;
  };
}

describe('client misuse', () => {
  let dir: string;
  let node: MercuryNode;

  before(async () => {
    dir = makeTempDir('client-misuse');
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), host: '127.0.0.1', port: 0 }), { auth: 'off', limits: NODE_LIMITS_TEST });
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  test('client misuse: NodeClient refuses a NaN ifModSeq, a negative minSeq and a huge minSeqTimeoutMs on both transports; the wire port neither writes with ifModSeq 0 nor throws out of its READY handler (found by audit: the process ended)', { timeout: 20_000 }, async () => {
    // A timeout no other client here uses: a channel of its own, whose first request waits for READY, where it is encoded.
    for (const url of [node.wireUrl, node.url]) {
      const first = new NodeClient(url, 4_321);
      await assert.rejects(first.get('misuse/a', { minSeq: -1 }), isOptionsError(/minSeq must be an integer/));
      await assert.rejects(first.get('misuse/a', { minSeq: 1, minSeqTimeoutMs: 2 ** 40 }), isOptionsError(/minSeqTimeoutMs must be an integer/));
      await assert.rejects(first.put('misuse/nan', 'v', { ifModSeq: NaN }), isOptionsError(/ifModSeq must be an integer/));
      await assert.rejects(first.delete('misuse/nan', { ifModSeq: 1.5 }), isOptionsError(/ifModSeq must be an integer/));
      await assert.rejects(first.get('misuse/a', null as never), isOptionsError(/options must be an object/));
      assert.equal(await first.get('misuse/nan'), undefined, `${url}: the put with ifModSeq NaN wrote`);
    }
  });

  test('client misuse: connect() refuses the same bad numbers with the same error over HTTP and the wire port', async () => {
    for (const url of [node.url, node.wireUrl]) {
      const client = connect(url);
      await assert.rejects(client.get('misuse/b', { minSeq: Number.NaN }), isOptionsError(/minSeq/));
      await assert.rejects(client.put('misuse/b', 'v', { ifModSeq: -1 }), isOptionsError(/ifModSeq/));
      await assert.rejects(client.delete('misuse/b', { ifModSeq: Infinity }), isOptionsError(/ifModSeq/));
      await assert.rejects(client.put('misuse/b', 'v', null as never), isOptionsError(/options must be an object/));
      client.close();
    }
  });

  test('client misuse: a key or value that is not a string or a Buffer is ClientOptionsError on both transports; an undefined value writes nothing (found by audit: HTTP wrote an empty value, the wire port ended the process on a number key)', { timeout: 20_000 }, async () => {
    for (const url of [node.wireUrl, node.url]) {
      // First requests of a channel of their own: the wire port encodes them when READY arrives.
      const first = new NodeClient(url, 4_567);
      await assert.rejects(first.get(5 as never), isOptionsError(/^key must be a string \(UTF-8\) or a Buffer, got number$/));
      const client = connect(url);
      await assert.rejects(client.get(5 as never), isOptionsError(/key must be a string .* got number/));
      await assert.rejects(client.get(undefined as never), isOptionsError(/key .* got undefined/));
      await assert.rejects(client.put({ key: 'a' } as never, 'v'), isOptionsError(/key .* got object/));
      await assert.rejects(client.delete(null as never), isOptionsError(/key .* got null/));
      await assert.rejects(client.put('misuse/undefined', undefined as never), isOptionsError(/value .* got undefined/));
      await assert.rejects(client.put('misuse/number', 5 as never), isOptionsError(/value .* got number/));
      await assert.rejects(client.put('misuse/u8', new Uint8Array([97]) as never), isOptionsError(/value .* got a Uint8Array \(wrap it/));
      for (const key of ['misuse/undefined', 'misuse/number', 'misuse/u8']) assert.equal(await client.get(key), undefined, `${url}: ${key} was written`);
      // Empty and oversized keys keep the node's own codes, alike on both.
      await assert.rejects(client.get(''), (error: unknown) => (error as { code?: string }).code === 'KEY_EMPTY');
      await assert.rejects(client.put('k'.repeat(2_000), 'v'), (error: unknown) => (error as { code?: string }).code === 'KEY_TOO_LARGE');
      client.close();
    }
  });

  test('client misuse: transaction ops, range prefixes and local reads of the wrong type are ClientOptionsError before anything is sent', async () => {
    const client = connect(node.url);
    assert.throws(() => op.put('misuse/t', undefined as never), isOptionsError(/value .* got undefined/));
    assert.throws(() => op.delete(7 as never), isOptionsError(/key .* got number/));
    assert.throws(() => cmp.value('misuse/t', '=', {} as never), isOptionsError(/value .* got object/));
    await assert.rejects(client.range(5 as never).next(), isOptionsError(/prefix must be a string/));
    client.close();
    const local = await openLocal(join(dir, 'node'));
    assert.throws(() => local.getSync(5 as never), isOptionsError(/key .* got number/));
    await local.close();
  });

  test('client misuse: an onSubscribed callback that throws ends the watch with its error, not the process (found by audit: an uncaught exception, and the watch hung)', { timeout: 20_000 }, async () => {
    const client = connect(node.url);
    const thrown = new Error('the application broke in onSubscribed');
    const watch = client.watch({
      prefix: 'misuse/',
      onSubscribed: () => {
        throw thrown;
      },
    });
    await assert.rejects(watch.next(), (error: unknown) => error === thrown);
    // Ended: nothing more is delivered, and return() after the error is harmless.
    assert.deepEqual(await watch.return(), { value: undefined, done: true });
    client.close();
  });

  test('client misuse: text holding half of a surrogate pair is ClientOptionsError on both transports, not written as U+FFFD (found by audit: put("\\ud800") wrote the key "\\ufffd")', async () => {
    for (const url of [node.wireUrl, node.url]) {
      const client = connect(url);
      await assert.rejects(client.put('misuse/\ud800', 'v'), isOptionsError(/^key holds half of a UTF-16 surrogate pair at index 7/));
      await assert.rejects(client.put('misuse/s', 'a\udc00'), isOptionsError(/^value holds half/));
      await assert.rejects(client.get('misuse/\udc00'), isOptionsError(/^key holds half/));
      // A whole pair is text like any other.
      await client.put('misuse/\ud83d\ude00', 'ok');
      assert.equal(await client.get('misuse/\ufffd'), undefined, `${url}: a lone surrogate was written as U+FFFD`);
      assert.equal((await client.get('misuse/\ud83d\ude00'))?.value.toString(), 'ok');
      client.close();
    }
    const client = connect(node.url);
    assert.throws(() => op.put('misuse/\ud800', 'v'), isOptionsError(/^key holds half/));
    await assert.rejects(client.deletePrefix('misuse/\ud800'), isOptionsError(/^prefix holds half/));
    await assert.rejects(client.range('misuse/\ud800').next(), isOptionsError(/^prefix holds half/));
    client.close();
  });
});
