/**
 * TypeScript client: a caller's mistakes. Arguments of the wrong type or range are refused before anything is sent,
 * with `ClientOptionsError` (CONFIG_INVALID), alike over HTTP and the wire port, against a real node on port 0; none
 * of them hangs, writes, or throws out of a socket's handler (which ends the process).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClientOptionsError, MercuryNode, NODE_LIMITS_TEST, NodeClient, connect, validateConfig } from '../src/index.js';
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
});
