/**
 * The /ui dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core; .ci/run installs it),
 * against real `mercury serve` processes in the demo's shape: a root, two intermediates under it, and leaves under
 * the intermediates with the root as fallback. The page is opened on a leaf, so it must climb to the root first.
 *
 * `MERCURY_UI_SCREENSHOT=docs/ui.png` also writes the README's screenshot at the end (the write arrived, a leaf killed).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { eventually, statusOf } from './support/tree.js';
import { request } from './support/http.js';

const CHROMIUM_PATH = process.env.MERCURY_CHROMIUM ?? '/usr/bin/chromium';
/** Generous: five node processes and a browser share two cores with the rest of the suite. */
const PAGE_TIMEOUT_MS = 30_000;

interface DemoNode {
  readonly name: string;
  readonly serve: ServeProcess;
}

/** Starts the demo's shape on ephemeral ports (the demo's fixed ports would collide with parallel runs). */
async function startDemoTree(dir: string, replicas: number): Promise<DemoNode[]> {
  const nodes: DemoNode[] = [{ name: 'root', serve: await startServe(`${dir}/root`) }];
  const root = nodes[0]!.serve;
  for (let i = 1; i <= replicas; i++) {
    const parent = i <= 2 ? root : nodes[1 + ((i - 1) % 2)]!.serve;
    const upstreams = parent === root ? [root.replication] : [parent.replication, root.replication];
    const serve = await startServe(`${dir}/replica-${i}`, ['--upstream', upstreams.join(',')]);
    nodes.push({ name: `replica-${i}`, serve });
    await eventually(
      async () => (await statusOf(serve)).replication.phase === 'streaming',
      async () => JSON.stringify((await statusOf(serve)).replication),
      PAGE_TIMEOUT_MS,
    );
  }
  return nodes;
}

function nodeItem(page: Page, node: ServeProcess): ReturnType<Page['locator']> {
  return page.locator(`li[data-url="${node.url}"]`);
}

describe('ui dashboard', { skip: existsSync(CHROMIUM_PATH) ? false : `${CHROMIUM_PATH} is not installed (.ci/run installs Debian's chromium)` }, () => {
  const dir = makeTempDir('ui');
  let nodes: DemoNode[] = [];
  let browser: Browser | undefined;
  const pageErrors: string[] = [];

  before(async () => {
    nodes = await startDemoTree(dir, 4);
    // Root runs without a user namespace sandbox: Chromium refuses to start its sandbox as root.
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  });

  after(async () => {
    await browser?.close();
    await Promise.all(nodes.map((node) => stopProcess(node.serve.child)));
    removeDir(dir);
  });

  test('ui: /ui redirects to /ui/, which ships its files with a strict Content-Security-Policy', async () => {
    const root = nodes[0]!.serve;
    const redirect = await request(root.url, 'GET', '/ui');
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.location, '/ui/');
    for (const [path, type] of [
      ['/ui/', 'text/html'],
      ['/ui/app.js', 'text/javascript'],
      ['/ui/style.css', 'text/css'],
      // A query on a static file is the browser's or the operator's (cache busting), never read, never refused.
      ['/ui/?v=2', 'text/html'],
      ['/ui/app.js?v=2&x', 'text/javascript'],
    ] as const) {
      const response = await request(root.url, 'GET', path);
      assert.equal(response.status, 200, path);
      assert.match(String(response.headers['content-type']), new RegExp(`^${type}`), path);
      const csp = String(response.headers['content-security-policy']);
      assert.match(csp, /script-src 'self'(;|$)/, 'no inline script, no eval');
      assert.match(csp, /default-src 'none'/);
    }
    const preflight = await request(root.url, 'OPTIONS', '/v1/status');
    assert.equal(preflight.status, 204);
    assert.match(String(preflight.headers['access-control-allow-headers']), /authorization/);
  });

  test('ui: renders the demo tree from a leaf, shows a write made on the leaf arriving on every node, and marks a killed node', async () => {
    const [root, mid1, mid2, leaf3, leaf4] = nodes.map((node) => node.serve) as [ServeProcess, ServeProcess, ServeProcess, ServeProcess, ServeProcess];
    const page = await browser!.newPage({ viewport: { width: 1280, height: 640 } });
    page.setDefaultTimeout(PAGE_TIMEOUT_MS);
    let killedUrl: string | undefined = undefined;
    page.on('pageerror', (error) => pageErrors.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      // Chromium logs every failed fetch as a console error. Polling the leaf this test kills fails so (connection
      // refused or reset, depending on when the poll meets the kill), which the page shows as "unreachable"; any other
      // failed load, a script error or a CSP violation still fails the test.
      const fromKilledLeaf = killedUrl !== undefined && message.location().url.startsWith(killedUrl);
      if (fromKilledLeaf && /^Failed to load resource: net::ERR_/.test(message.text())) return;
      pageErrors.push(`console: ${message.text()} (${message.location().url})`);
    });
    await page.goto(`${leaf3.url}/ui`);

    // The whole tree, nested as it is: root > intermediates > leaves, every node healthy.
    await page.locator('li[data-node-id]').nth(4).waitFor();
    await nodeItem(page, root).locator(`li[data-url="${mid1.url}"] li[data-url="${leaf3.url}"]`).waitFor();
    await nodeItem(page, root).locator(`li[data-url="${mid2.url}"] li[data-url="${leaf4.url}"]`).waitFor();
    assert.equal(await page.locator('li[data-node-id]').count(), 5);
    // Page functions are strings: the test's TypeScript program has no DOM types.
    await page.waitForFunction(`[...document.querySelectorAll('li[data-node-id]')].every((item) => item.dataset.state === 'ok')`);
    assert.equal(await nodeItem(page, root).first().locator(':scope > .card .role').textContent(), 'root');

    // A write through the leaf's page (POST /v1/txn, forwarded to the root) arrives on every node of the page.
    await page.fill('#write-key', 'app/feature');
    await page.fill('#write-value', 'on');
    await page.click('#write-form button');
    await page.locator('#write-info[data-arrived="true"]').waitFor();
    const written = /at seq (\d+)/.exec((await page.locator('#write-info').textContent()) ?? '');
    assert.ok(written !== null, 'the page names the seq of the write');
    const seq = Number(written[1]);
    for (const node of [root, mid1, mid2, leaf3, leaf4]) {
      await page.waitForFunction(`Number(document.querySelector('li[data-url="${node.url}"]')?.dataset.seq) >= ${seq}`);
      const value = await request(node.url, 'GET', '/v1/kv/app%2Ffeature');
      assert.equal(value.body.toString(), 'on', `${node.url} has the write`);
    }
    // The key browser lists it (the page lists keys of the node that served it).
    await page.fill('#prefix', 'app/');
    await page.click('#browse-form button');
    await page.locator('#keys tr[data-key="app/feature"] td[data-field="value"]', { hasText: 'on' }).waitFor();

    // A killed leaf stays on the page, marked unreachable, under the parent it had.
    killedUrl = leaf4.url;
    await stopProcess(leaf4.child);
    await nodeItem(page, mid2).locator(`li[data-url="${leaf4.url}"][data-state="unreachable"]`).waitFor();
    assert.match((await page.locator('#summary').textContent()) ?? '', /1 unreachable/);
    for (const node of [root, mid1, mid2, leaf3]) assert.equal(await nodeItem(page, node).first().getAttribute('data-state'), 'ok', node.url);
    if (process.env.MERCURY_UI_SCREENSHOT !== undefined) await page.screenshot({ path: process.env.MERCURY_UI_SCREENSHOT, fullPage: true });

    assert.deepEqual(pageErrors, [], 'no script error or CSP violation on the page');
    await page.close();
  });
});
