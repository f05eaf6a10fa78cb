/**
 * TypeScript client against a fake HTTP node on port 0 that answers badly (a proxy's page, a broken or hostile node):
 * an answer larger than the call can legitimately receive is dropped at its bound, announced or not; a body that is
 * not the JSON the call expects (not JSON, wrong types, unknown encodings, missing seq headers, more without a cursor)
 * fails with `InvalidAnswerError` naming the field; range and log walks whose cursor does not advance end with it
 * instead of paging for ever. A read goes on to the next node; a write becomes `OutcomeUnknownError`.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { LOG_PAGE_ANSWER_BYTES_MAX } from '../src/api/index.js';
import { connect, InvalidAnswerError, NodeClient, NoNodeReachableError, OutcomeUnknownError } from '../src/index.js';
import { startFakeServer, type FakeServer } from './support/net.js';

const MiB = 1024 * 1024;

/** What the fake node answers to every request. */
type Answer = (res: ServerResponse) => void;

function json(body: string | Buffer, headers: Record<string, string> = {}): Answer {
  return (res) => {
    res.writeHead(200, { 'content-type': 'application/json', ...headers });
    res.end(body);
  };
}

/** An endless body, written as fast as the client reads it, until the client drops the connection. */
function endless(status: number, headers: Record<string, string | number> = {}): Answer {
  return (res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    const chunk = Buffer.alloc(MiB, 0x20);
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once('drain', pump);
    };
    res.on('error', () => {});
    pump();
  };
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (result) => assert.fail(`resolved with ${JSON.stringify(result)}`),
    (error: unknown) => error,
  );
}

function assertInvalid(error: unknown, code: 'PROTOCOL' | 'ANSWER_TOO_LARGE', pattern: RegExp): void {
  assert.ok(error instanceof InvalidAnswerError, String(error));
  assert.equal(error.code, code);
  assert.match(error.message, pattern);
}

const item = (key: string): Record<string, unknown> => ({ key, keyEncoding: 'utf8', value: 'x', valueEncoding: 'utf8', createSeq: 1, modSeq: 1, version: 1 });

describe('client hostile answers', () => {
  let server: FakeServer;
  let answer: Answer = json('{}');

  before(async () => {
    server = await startFakeServer((_req, res) => answer(res));
  });

  after(async () => {
    await server.close();
  });

  // Found by an audit (2026-12-06): the check ran once the whole body was held, so a log page of 256 MiB of `{}` (what
  // its byte bound allows) was refused only after the client peaked at ~600 MB. First in the file: it measures the
  // process's peak RSS, which earlier tests would have raised.
  test('client answers: a 256 MiB page of junk values is refused at the chunk that breaks the limit, and memory stays flat', async () => {
    const pageBytes = LOG_PAGE_ANSWER_BYTES_MAX;
    const head = Buffer.from('{"firstSeq":1,"lastSeq":1,"nextSeq":null,"entries":[],"junk":[{}');
    const junk = Buffer.from(',{}'.repeat(MiB / 3));
    let sent = 0;
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': pageBytes });
      res.on('error', () => {});
      const pump = (): void => {
        while (!res.destroyed && sent < pageBytes) {
          const chunk = sent === 0 ? head : junk.subarray(0, pageBytes - sent);
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        if (!res.destroyed) res.end();
      };
      pump();
    };
    const rssBefore = Math.max(process.memoryUsage().rss, process.resourceUsage().maxRSS * 1024);
    assertInvalid(await caught(new NodeClient(server.url, 60_000).log(1)), 'PROTOCOL', /refused before parsing: the body holds more than 4500000 JSON values/);
    const peakGrowth = process.resourceUsage().maxRSS * 1024 - rssBefore;
    assert.ok(peakGrowth < 128 * MiB, `peak RSS grew ${(peakGrowth / MiB).toFixed(0)} MiB`);
    // 4.5 million values are 13.5 MB of `{},`; loopback's socket buffers hold a few MB more.
    assert.ok(sent < 64 * MiB, `the node wrote ${(sent / MiB).toFixed(0)} MiB before the client hung up`);
  });

  test('client answers: a 2 GiB Content-Length is refused before a byte of it is read', async () => {
    answer = endless(200, { 'content-length': 2 * 1024 * MiB });
    const error = await caught(new NodeClient(server.url).status());
    assertInvalid(error, 'ANSWER_TOO_LARGE', /2147483648 bytes; at most 1048576/);
  });

  test('client answers: an endless chunked answer is dropped at the call\'s bound, and memory stays flat', async () => {
    answer = endless(200);
    const heapBefore = process.memoryUsage().heapUsed + process.memoryUsage().external + process.memoryUsage().arrayBuffers;
    const started = Date.now();
    const error = await caught(new NodeClient(server.url, 60_000).status());
    assertInvalid(error, 'ANSWER_TOO_LARGE', /more than 1048576 bytes/);
    assert.ok(Date.now() - started < 10_000, 'refused at once, not at the timeout');
    const heapAfter = process.memoryUsage().heapUsed + process.memoryUsage().external + process.memoryUsage().arrayBuffers;
    assert.ok(heapAfter - heapBefore < 64 * MiB, `grew ${((heapAfter - heapBefore) / MiB).toFixed(0)} MiB`);
  });

  test('client answers: an endless error body is read up to 64 KiB, for calls and streams alike', async () => {
    answer = endless(503);
    assertInvalid(await caught(new NodeClient(server.url).status()), 'ANSWER_TOO_LARGE', /HTTP 503 with a body of more than 65536 bytes/);
    assertInvalid(await caught(new NodeClient(server.url).stream('/v1/snapshot')), 'ANSWER_TOO_LARGE', /HTTP 503 with a body of more than 65536 bytes/);
  });

  test('client answers: bodies that are not the JSON a call expects are InvalidAnswerError PROTOCOL naming the field', async () => {
    const node = new NodeClient(server.url);
    const cases: [Answer, () => Promise<unknown>, RegExp][] = [
      [json('<html>proxy login</html>', { 'content-type': 'text/html' }), () => node.status(), /not JSON/],
      [json('{"seq":1,"items":['), () => node.rangePage('a'), /not JSON/],
      [json('{"seq":1,"items":null,"more":false,"cursor":null}'), () => node.rangePage('a'), /answer\.items must be an array/],
      [json(JSON.stringify({ seq: 1, items: [{ ...item('zz'), keyEncoding: 'hex' }], more: false, cursor: null })), () => node.rangePage('a'), /items\[0\]\.key must be/],
      [json(JSON.stringify({ seq: 1, items: [{ ...item('a'), valueEncoding: 'base64', value: 'not base64!' }], more: false, cursor: null })), () => node.rangePage('a'), /items\[0\]\.value must be/],
      [json(JSON.stringify({ seq: 1, items: [item('a')], more: true, cursor: null })), () => node.rangePage('a'), /answer\.cursor must be a base64url string/],
      [json(JSON.stringify({ seq: 1, items: [item('b'), item('a')], more: false, cursor: null })), () => node.rangePage(''), /items\[1\]\.key must sort after/],
      [json('value', { 'content-type': 'application/octet-stream' }), () => node.get('a'), /header x-mercury-seq is missing/],
      [json('{"seq":"banana"}'), () => node.put('a', 'b'), /answer\.seq must be an integer/],
      [json('[]'), () => node.txn({ success: [] }), /answer must be a JSON object/],
      [json('{"seq":3}'), () => node.delete('a'), /answer\.deleted must be true or false/],
      [json('{"firstSeq":1,"lastSeq":9,"nextSeq":"2","entries":[]}'), () => node.log(1), /answer\.nextSeq must be an integer/],
      [json('{"tokens":[{"id":"1","name":"n","scopes":[7],"createdMs":1,"kind":"token"}],"seq":1}'), () => node.listTokens(), /tokens\[0\]\.scopes\[0\] must be a string/],
    ];
    for (const [body, call, pattern] of cases) {
      answer = body;
      assertInvalid(await caught(call()), 'PROTOCOL', pattern);
    }
  });

  test('client answers: a body that is not JSON, short or long, is described as the answer it is, not as a request body', async () => {
    // Before: the messages were the node's own JSON checks' to a client about its request ("request body is not valid
    // JSON", "the request body is not valid UTF-8; send binary keys and values as base64"), said of the node's answer.
    const node = new NodeClient(server.url);
    const bodies = ['<html>proxy login</html>', `<html>${'x'.repeat(2_000)}</html>`, Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])];
    for (const body of bodies) {
      answer = json(body);
      const error = await caught(node.status());
      assertInvalid(error, 'PROTOCOL', /answered a body that is not JSON \(the answer is not valid (JSON|UTF-8)/);
      assert.doesNotMatch((error as Error).message, /request body|send binary keys/);
    }
  });

  test('client answers: a read that got a bad answer goes on to the next node; a write is OutcomeUnknownError', async () => {
    const good = await startFakeServer((_req, res) => json('{"seq":1,"items":[],"more":false,"cursor":null}')(res));
    try {
      answer = json('<html>proxy login</html>', { 'content-type': 'text/html' });
      const client = connect([server.url, good.url], { attemptsMax: 2 });
      const pages = [];
      for await (const page of client.range('a')) pages.push(page);
      assert.deepEqual(pages, [{ seq: 1, items: [] }]);
      assert.equal(good.requests.length, 1);

      answer = json('{"seq":"banana"}');
      const single = connect(server.url, { attemptsMax: 3 });
      const write = await caught(single.put('a', 'b'));
      assert.ok(write instanceof OutcomeUnknownError, String(write));
      assert.ok(write.cause instanceof InvalidAnswerError);
      const read = await caught(single.status());
      assert.ok(read instanceof NoNodeReachableError, String(read));
      assert.ok(read.errors.every((error) => error instanceof InvalidAnswerError && error.code === 'PROTOCOL'));
    } finally {
      await good.close();
    }
  });

  test('client answers: a range whose cursor does not advance ends with PROTOCOL instead of paging for ever', async () => {
    const node = new NodeClient(server.url);
    for (const [cursor, pattern] of [
      ['YQ', /must sort after the cursor the page was asked from/],
      ['', /answer\.cursor must be a base64url string/],
      ['YA', /must not be before the last item of its page/],
    ] as const) {
      answer = json(JSON.stringify({ seq: 1, items: [item('a')], more: true, cursor }));
      let pages = 0;
      const walk = async (): Promise<void> => {
        for await (const _ of node.range('')) if (++pages > 10) assert.fail('paged on');
      };
      assertInvalid(await caught(walk()), 'PROTOCOL', pattern);
      assert.ok(pages <= 1, `${pages} items before the fault`);
      const client = connect(server.url, { attemptsMax: 1 });
      const walkClient = async (): Promise<void> => {
        for await (const _ of client.range('')) if (++pages > 10) assert.fail('paged on');
      };
      const error = await caught(walkClient());
      assert.ok(error instanceof NoNodeReachableError && error.errors[0] instanceof InvalidAnswerError, String(error));
    }
  });

  test('client answers: a log walk whose nextSeq does not advance ends with PROTOCOL', async () => {
    const node = new NodeClient(server.url);
    for (const nextSeq of [5, 4]) {
      answer = json(JSON.stringify({ firstSeq: 1, lastSeq: 9, nextSeq, entries: [{ seq: 5 }] }));
      let entries = 0;
      const walk = async (): Promise<void> => {
        for await (const _ of node.logEntries(5)) if (++entries > 10) assert.fail('paged on');
      };
      assertInvalid(await caught(walk()), 'PROTOCOL', new RegExp(`nextSeq is ${nextSeq}; it must be after 5`));
    }
  });
  // Found by an audit (2026-12-06): an answer node:http's parser refuses was "cannot reach URL: HPE_INVALID_CONSTANT".
  test('client answers: a port that answers something not HTTP, or endless headers, is PROTOCOL or ANSWER_TOO_LARGE', async () => {
    const node = new NodeClient(server.url, 60_000);
    answer = (res) => void res.socket!.end('SSH-2.0-OpenSSH_9.6\r\n\r\n');
    for (const call of [() => node.status(), () => node.stream('/v1/snapshot')])
      assertInvalid(await caught(call()), 'PROTOCOL', /answered something that is not HTTP \(HPE_INVALID_CONSTANT: .*\); is http:\/\/127\.0\.0\.1:\d+ the node's HTTP port\?/);
    answer = (res) => {
      res.socket!.write('HTTP/1.1 200 OK\r\n');
      const header = `x-junk: ${'a'.repeat(4096)}\r\n`;
      const pump = (): void => {
        while (!res.socket!.destroyed && res.socket!.write(header));
        if (!res.socket!.destroyed) res.socket!.once('drain', pump);
      };
      res.socket!.on('error', () => {});
      pump();
    };
    assertInvalid(await caught(node.get('k')), 'ANSWER_TOO_LARGE', /answered headers over the 16384 bytes read of them/);
  });

  // Found by an audit (2026-12-06): a value whose body ran to the connection's close was taken whole, cut or not.
  test('client answers: a 2xx body without Content-Length or chunked framing is PROTOCOL', async () => {
    const node = new NodeClient(server.url);
    const headers = 'x-mercury-seq: 5\r\nx-mercury-create-seq: 1\r\nx-mercury-mod-seq: 1\r\nx-mercury-version: 1\r\n';
    answer = (res) => void res.socket!.end(`HTTP/1.1 200 OK\r\n${headers}Connection: close\r\n\r\nhalf a val`);
    assertInvalid(await caught(node.get('k')), 'PROTOCOL', /HTTP 200 with neither Content-Length nor chunked framing/);
    answer = (res) => void res.socket!.end(`HTTP/1.1 200 OK\r\n${headers}Content-Length: 11\r\n\r\nwhole value`);
    assert.equal((await node.get('k'))?.value.toString(), 'whole value');
  });

  // Found by an audit (2026-12-06): a page's items and entries were handed on whatever they were, so a node could
  // answer keys of another prefix, more items than asked for, or log entries of any seq, and lead a walk out of its
  // prefix cursor after cursor.
  test('client answers: a range page or log page that is not what was asked for is PROTOCOL', async () => {
    const node = new NodeClient(server.url);
    const range = (items: Record<string, unknown>[], cursor: string | null): Answer => json(JSON.stringify({ seq: 1, items, more: cursor !== null, cursor }));
    const rangeCases: [Answer, number | undefined, RegExp][] = [
      [range([item('b/1')], null), undefined, /answer\.items\[0\]\.key must start with the prefix/],
      [range([item('a/1'), item('a/2'), item('a/3')], null), 2, /answer\.items holds 3 items; the page was asked for at most 2/],
      [range([item('a/1')], Buffer.from('b').toString('base64url')), undefined, /answer\.cursor must start with the prefix/],
      [range([item('a/1')], Buffer.alloc(1025, 'a').toString('base64url')), undefined, /answer\.cursor is a key of 1025 bytes; keys are at most 1024/],
    ];
    for (const [body, limit, pattern] of rangeCases) {
      answer = body;
      assertInvalid(await caught(node.rangePage('a/', { limit })), 'PROTOCOL', pattern);
    }
    const log = (entries: number[], nextSeq: number | null, lastSeq = 9): Answer => json(JSON.stringify({ firstSeq: 1, lastSeq, nextSeq, entries: entries.map((seq) => ({ seq })) }));
    const logCases: [Answer, number | undefined, RegExp][] = [
      [log([5, 7], 8), undefined, /answer\.entries\[1\]\.seq is 7; the log has no gaps, so it must be 6/],
      [log([6], 7), undefined, /answer\.entries\[0\]\.seq is 6; .* must be 5/],
      [log([5, 6, 7], 8), 2, /answer\.entries holds 3 entries; the page was asked for at most 2/],
      [log([5], 9), undefined, /answer\.nextSeq is 9; it must follow the page's last entry \(6\)/],
      [log([5, 6], 7, 6), undefined, /answer\.nextSeq is 7, past the lastSeq 6/],
    ];
    for (const [body, limit, pattern] of logCases) {
      answer = body;
      assertInvalid(await caught(node.log(5, limit)), 'PROTOCOL', pattern);
    }
    answer = log([5, 6], 7);
    assert.deepEqual((await node.log(5, 2)).entries, [{ seq: 5 }, { seq: 6 }]);
  });

  // Found by an audit (2026-12-06): bodies within the byte bounds were parsed whole, and 60 MiB of `{}` in a log page
  // took a client to 2.2 GB and 30 s (256 MiB, which the bound allows, did not finish in 5 minutes).
  test('client answers: more JSON values than the call can receive, or deeper nesting, is PROTOCOL before parsing', async () => {
    const node = new NodeClient(server.url, 60_000);
    const junk = (head: string, values: number, tail: string): Answer => json(`${head}{}${',{}'.repeat(values - 1)}${tail}`);
    answer = junk('{"firstSeq":1,"lastSeq":1,"nextSeq":null,"entries":[],"junk":[', 5_000_000, ']}');
    const heapBefore = process.memoryUsage().heapUsed;
    assertInvalid(await caught(node.log(1)), 'PROTOCOL', /refused before parsing: the body holds more than 4500000 JSON values/);
    assert.ok(process.memoryUsage().heapUsed - heapBefore < 256 * MiB, 'not parsed');
    answer = junk('{"seq":1,"more":false,"cursor":null,"items":[],"junk":[', 200, ']}');
    assertInvalid(await caught(node.rangePage('a', { limit: 10 })), 'PROTOCOL', /more than 136 JSON values/);
    answer = junk('{"tokens":[],"seq":1,"junk":[', 1_000_001, ']}');
    assertInvalid(await caught(node.listTokens()), 'PROTOCOL', /more than 1000000 JSON values/);
    answer = json(`{"seq":1,"junk":${'['.repeat(100_000)}${']'.repeat(100_000)}}`);
    assertInvalid(await caught(node.put('k', 'v')), 'PROTOCOL', /refused before parsing: .*deeper than 32/);
  });

  // Found by an audit (2026-12-06): node:http ends a request answered 101 without an 'upgrade' listener and emits
  // nothing more, so the call never settled (the CLI exited 0 having printed nothing).
  test('client answers: a 101 to a request that asked for no upgrade is PROTOCOL at once, for calls and streams alike', async () => {
    answer = (res) => void res.socket!.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
    const node = new NodeClient(server.url, 60_000);
    const started = Date.now();
    for (const call of [() => node.status(), () => node.get('k'), () => node.put('k', 'v'), () => node.stream('/v1/snapshot')])
      assertInvalid(await caught(call()), 'PROTOCOL', /answered HTTP 101 \(a protocol switch\) to a request that asked for none/);
    assert.ok(Date.now() - started < 30_000, 'refused at once, not at the timeout');
  });

  // Found by an audit (2026-12-06): an answer at a seq below the minSeq asked for was taken as it came.
  test('client answers: a read answered below the minSeq it asked for is PROTOCOL, and goes on to the next node', async () => {
    const node = new NodeClient(server.url);
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-mercury-seq': '3', 'x-mercury-create-seq': '1', 'x-mercury-mod-seq': '2', 'x-mercury-version': '1' });
      res.end('old value');
    };
    assertInvalid(await caught(node.get('k', { minSeq: 10 })), 'PROTOCOL', /answered at seq 3, below the minSeq 10 it was asked for/);
    assert.equal((await node.get('k', { minSeq: 3 }))?.value.toString(), 'old value');
    // A key found absent below minSeq too (audit, 2026-12-06: taken as absent, so a replica that ignored minSeq hid a
    // write the caller had just made).
    answer = (res) => {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'KEY_NOT_FOUND', message: 'key "k" does not exist at seq 3', seq: 3 } }));
    };
    assertInvalid(await caught(node.get('k', { minSeq: 10 })), 'PROTOCOL', /answered at seq 3, below the minSeq 10 it was asked for/);
    assert.equal(await node.get('k', { minSeq: 3 }), undefined);
    answer = json(JSON.stringify({ seq: 3, items: [item('a')], more: false, cursor: null }));
    assertInvalid(await caught(node.rangePage('', { minSeq: 10 })), 'PROTOCOL', /answered at seq 3, below the minSeq 10/);
    const good = await startFakeServer((_req, res) => json(JSON.stringify({ seq: 10, items: [item('a')], more: false, cursor: null }))(res));
    try {
      const client = connect([server.url, good.url], { attemptsMax: 2 });
      const pages = [];
      for await (const page of client.range('', { minSeq: 10 })) pages.push(page.seq);
      assert.deepEqual(pages, [10]);
    } finally {
      await good.close();
    }
  });
});
