// Mercury's dashboard (/ui). Plain JavaScript, no build, no dependency; loaded as a module from the node that serves
// it, under a Content-Security-Policy that allows no inline script.
//
// How it stays live: it polls `/v1/status` of every node once per POLL_INTERVAL_MS. One status answer carries all a
// node card shows (seq, lag, watchers, snapshot progress, children with their HTTP URLs), every node serves it
// already, and a dead node shows up as a failed poll. A watch WebSocket per node would carry key changes only, not
// lag or watchers, and would still need status for the rest.
//
// The walk: from the node that served the page up through each replica's upstream to the root, then down through
// each node's `replication.children[].httpUrl` (sent by every child in its replication HELLO). A node seen once and
// then missing (it stopped, or its parent no longer lists it) stays on the page, marked unreachable, under the parent
// it had. Everything the page shows from a node is set as text, never as HTML.
//
// Where the token goes: only to the page's own origin, and to the origins the operator typed under "also send it to".
// The URLs the walk follows are what other nodes claim (a child names its own URL in its HELLO, and any process with a
// `replicate` token can be a child), so a token sent wherever the tree points would go to whoever claims a place in
// it. Other nodes are polled without the token; one that wants a token shows as "needs a token", naming its origin.

const POLL_INTERVAL_MS = 1000;
/** A status answer slower than this counts as unreachable for that round. */
const STATUS_TIMEOUT_MS = 3000;
/** The walk stops here: a bigger tree is better watched through Prometheus (deploy/grafana). */
const NODES_MAX = 500;
/** As the replication protocol: no tree is deeper than this. */
const PATH_NODES_MAX = 32;
const LAG_ENTRIES_WARN = 100;
const LAG_MS_WARN = 2000;
const KEYS_PAGE_LIMIT = 100;
const TOKEN_STORAGE_KEY = 'mercury.token';
/** The origins besides the page's own that get the token, space-separated, as the operator approved them. */
const TOKEN_ORIGINS_STORAGE_KEY = 'mercury.tokenOrigins';

const $ = (id) => document.getElementById(id);

/** nodeId -> what the page knows of a node: { id, url, parentId, status, reachable, error, rates, sample, lastSeenMs } */
const known = new Map();
let rootUrl;
let lastWrite;
let browse = { prefix: undefined, seq: -1 };
let polling = false;

function token() {
  return sessionStorage.getItem(TOKEN_STORAGE_KEY) ?? '';
}

function tokenOrigins() {
  return (sessionStorage.getItem(TOKEN_ORIGINS_STORAGE_KEY) ?? '').split(' ').filter((origin) => origin !== '');
}

/** Whether a request to `url` may carry the token: the page's own origin, or one the operator approved. */
function sendsToken(url) {
  const origin = new URL(url, location.href).origin;
  return origin === location.origin || tokenOrigins().includes(origin);
}

/** An http(s) URL a node announced, or undefined: a node of an older version may still pass on anything its child sent. */
function httpUrl(text) {
  if (typeof text !== 'string' || text === '') return undefined;
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? text : undefined;
  } catch {
    return undefined;
  }
}

async function fetchJson(url, init = {}) {
  const bearer = token();
  const headers = bearer === '' || !sendsToken(url) ? init.headers : { ...init.headers, authorization: `Bearer ${bearer}` };
  // No redirects: no API route redirects, and a node that did would be sending the request (and its token) elsewhere.
  const response = await fetch(url, { ...init, headers, redirect: 'error', signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) });
  const body = await response.json().catch(() => undefined);
  if (!response.ok) {
    const error = body?.error;
    throw Object.assign(new Error(error === undefined ? `HTTP ${response.status}` : `${error.code}: ${error.message}`), { code: error?.code });
  }
  return body;
}

/** What a card says for a failed status poll: a node that wants the token this page did not send it names its origin. */
function pollFailure(url, error) {
  if (error.code !== 'UNAUTHENTICATED' || sendsToken(url)) return { error: String(error.message ?? error), needsToken: false };
  const origin = new URL(url).origin;
  return { error: `needs a token: this page sends it only to its own origin and to those under "also send it to"; add ${origin} there if you trust that node`, needsToken: true };
}

async function statusOf(url) {
  return checkedStatus(await fetchJson(new URL('/v1/status', url)));
}

const isObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * A status answer with the shape the walk and the cards rely on, else an Error (the node shows as unreachable with
 * it). Any process with a `replicate` token can be a child and answer anything: one status with `"snapshot": {}`
 * blanked the whole tree (audit, 2026-12-06). Fields a card reads beyond these are checked where they are shown.
 */
function checkedStatus(status) {
  if (!isObject(status)) throw new Error('malformed status: not a JSON object');
  if (typeof status.nodeId !== 'string') throw new Error('malformed status: no nodeId');
  const replication = status.replication;
  if (replication !== undefined && replication !== null) {
    if (!isObject(replication)) throw new Error('malformed status: replication is not an object');
    if (replication.children !== undefined && !(Array.isArray(replication.children) && replication.children.every(isObject)))
      throw new Error('malformed status: replication.children is not a list of objects');
  }
  return status;
}

/**
 * Climbs from `start` to the root; answers the highest node reached, and the upstream above it that did not answer
 * ({ nodeId, url, error, needsToken }), if any.
 */
async function findTop(start) {
  let url = start;
  let top;
  for (let hops = 0; hops <= PATH_NODES_MAX; hops++) {
    let status;
    try {
      status = await statusOf(url);
    } catch (error) {
      const nodeId = top?.status.replication?.upstream?.nodeId;
      return { top, stuck: top === undefined || typeof nodeId !== 'string' ? undefined : { nodeId, url, ...pollFailure(url, error) } };
    }
    top = { url, status };
    const upstream = httpUrl(status.replication?.upstream?.httpUrl);
    if (status.role === 'root' || upstream === undefined) return { top, stuck: undefined };
    url = upstream;
  }
  return { top, stuck: undefined };
}

/** One round: every node reachable from the top, level by level; answers nodeId -> { url, status, parentId, error }. */
async function walk() {
  const round = new Map();
  let climb;
  if (rootUrl !== undefined) climb = await findTop(rootUrl);
  if (climb?.top === undefined || climb.top.status.role !== 'root') climb = await findTop(location.origin);
  const { top, stuck } = climb;
  if (top === undefined) return round;
  if (top.status.role === 'root') rootUrl = top.url;
  // An upstream the climb could not read stays above the highest node reached, with the reason.
  if (stuck !== undefined) round.set(stuck.nodeId, { url: stuck.url, status: undefined, parentId: undefined, error: stuck.error, needsToken: stuck.needsToken });
  round.set(top.status.nodeId, { url: top.url, status: top.status, parentId: stuck?.nodeId });
  let level = [top];
  while (level.length > 0 && round.size < NODES_MAX) {
    const next = [];
    const fetches = [];
    for (const parent of level) {
      for (const child of parent.status.replication?.children ?? []) {
        if (child.nodeId === undefined || child.nodeId === null) continue;
        const claimed = round.get(child.nodeId);
        if (claimed !== undefined) {
          // An id listed twice: the first listing keeps the card, and the card says so. Any child can list any id, so
          // a fake one could otherwise take a real node's card without a trace (audit, 2026-12-06).
          const url = httpUrl(child.httpUrl);
          if (claimed.parentId !== parent.status.nodeId || claimed.url !== url)
            claimed.conflict = `also listed as a child of ${parent.status.nodeId}${url === undefined ? '' : ` at ${url}`}`;
          continue;
        }
        if (round.size + fetches.length >= NODES_MAX) continue;
        const entry = { url: httpUrl(child.httpUrl), status: undefined, parentId: parent.status.nodeId, error: undefined, needsToken: false };
        round.set(child.nodeId, entry);
        if (entry.url === undefined) {
          entry.error = 'its replication HELLO named no http(s) URL';
          continue;
        }
        fetches.push(
          statusOf(entry.url).then(
            (status) => {
              entry.status = status;
              next.push({ url: entry.url, status });
            },
            (error) => {
              Object.assign(entry, pollFailure(entry.url, error));
            },
          ),
        );
      }
    }
    await Promise.all(fetches);
    level = next;
  }
  return round;
}

function merge(round, nowMs) {
  for (const [id, seen] of round) {
    const node = known.get(id) ?? { id, rates: {}, sample: undefined };
    node.url = seen.url ?? node.url;
    if (seen.parentId !== undefined || seen.status !== undefined) node.parentId = seen.parentId;
    node.reachable = seen.status !== undefined;
    node.error = seen.error;
    node.conflict = seen.conflict;
    node.needsToken = seen.needsToken === true;
    if (!node.reachable) node.rates = {};
    if (seen.status !== undefined) {
      const status = seen.status;
      const sample = { seq: status.seq, writes: status.writesCommitted, timeMs: nowMs };
      if (node.sample !== undefined && nowMs > node.sample.timeMs) {
        const seconds = (nowMs - node.sample.timeMs) / 1000;
        node.rates = {
          entries: Math.max(0, (sample.seq - node.sample.seq) / seconds),
          writes: typeof sample.writes === 'number' && typeof node.sample.writes === 'number' ? Math.max(0, (sample.writes - node.sample.writes) / seconds) : undefined,
        };
      }
      node.sample = sample;
      node.status = status;
      node.lastSeenMs = nowMs;
    }
    known.set(id, node);
  }
  for (const [id, node] of known) {
    if (round.has(id)) continue;
    // Forgotten at once when nothing could ever reach it (no URL), else kept as gone: a fake child listing hundreds of
    // new ids each round grew this map, and the page, without bound (audit, 2026-12-06).
    if (node.url === undefined) {
      known.delete(id);
      continue;
    }
    node.reachable = false;
    node.needsToken = false;
    node.rates = {};
    node.error = 'no longer in the tree: its parent does not list it';
  }
  // At most NODES_MAX remembered: the gone ones seen longest ago are forgotten first.
  if (known.size > NODES_MAX) {
    const gone = [...known.values()].filter((node) => !round.has(node.id)).sort((a, b) => (a.lastSeenMs ?? 0) - (b.lastSeenMs ?? 0));
    for (const node of gone.slice(0, known.size - NODES_MAX)) known.delete(node.id);
  }
}

/** 'ok' | 'lagging' | 'diverged' | 'unreachable' | 'needs-token', and the reasons shown beside the badges. */
function stateOf(node) {
  if (!node.reachable) return node.needsToken ? 'needs-token' : 'unreachable';
  const replication = node.status.replication ?? {};
  if (replication.divergedReason) return 'diverged';
  if (node.status.role === 'replica') {
    if (replication.phase !== 'streaming') return 'lagging';
    if ((replication.lagEntries ?? 0) > LAG_ENTRIES_WARN || (replication.lagMs ?? 0) > LAG_MS_WARN) return 'lagging';
  }
  return 'ok';
}

function element(tag, attributes = {}, ...children) {
  const result = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined) result.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== undefined && child !== null) result.append(child instanceof Node ? child : String(child));
  }
  return result;
}

function metric(field, label, value) {
  return element('span', { class: 'metric', 'data-field': field }, element('span', {}, label), element('b', {}, value));
}

function formatRate(rate) {
  if (rate === undefined) return '–';
  return rate >= 100 ? Math.round(rate).toLocaleString('en') : rate.toFixed(1);
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return '?';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function nameOf(node) {
  if (node.url === undefined) return node.id;
  try {
    return new URL(node.url).host;
  } catch {
    return node.url;
  }
}

function card(node) {
  const state = stateOf(node);
  const status = node.status ?? {};
  const replication = status.replication ?? {};
  const isRoot = status.role === 'root';
  const title = node.url === undefined ? nameOf(node) : element('a', { href: new URL('/ui/', node.url).href }, nameOf(node));
  const badges = [];
  if (state !== 'ok') badges.push(element('span', { class: `badge ${state}`, 'data-badge': state }, state === 'needs-token' ? 'needs a token' : state));
  if (replication.snapshot) {
    const { keysReceived, keyCount } = replication.snapshot;
    const percent = keyCount > 0 ? Math.floor((100 * keysReceived) / keyCount) : 0;
    badges.push(element('span', { class: 'badge snapshot', 'data-badge': 'snapshot' }, `snapshot ${percent}% of ${keyCount.toLocaleString('en')} keys`));
  }
  if (status.storage && (!status.storage.sound || !status.storage.writable)) badges.push(element('span', { class: 'badge diverged', 'data-badge': 'storage' }, 'storage'));
  if (node.conflict !== undefined) badges.push(element('span', { class: 'badge diverged', 'data-badge': 'listed-twice' }, 'listed twice'));
  const lagEntries = isRoot ? 0 : replication.lagEntries;
  const lagMs = isRoot ? 0 : replication.lagMs;
  const watch = status.watch ?? {};
  const children = [
    element('span', { class: 'name' }, title, element('span', { class: 'role' }, status.role ?? ''), ...badges),
    metric('seq', 'seq', status.seq?.toLocaleString('en') ?? '?'),
    metric('lag', 'lag', `${lagEntries ?? '?'} / ${formatMs(lagMs)}`),
    isRoot ? metric('rate', 'writes/s', formatRate(node.rates.writes)) : metric('rate', 'entries/s', formatRate(node.rates.entries)),
    metric('watchers', 'watchers', watch.subscriptions ?? '?'),
    metric('children', 'children', replication.children?.length ?? '?'),
    metric('keys', 'keys', status.keys?.toLocaleString('en') ?? '?'),
  ];
  const details = [];
  if (!node.reachable) details.push(`${node.error ?? 'unreachable'}; last seen ${node.lastSeenMs === undefined ? 'never' : new Date(node.lastSeenMs).toLocaleTimeString('en-GB')}`);
  if (node.conflict !== undefined) details.push(node.conflict);
  if (replication.divergedReason) details.push(`diverged: ${replication.divergedReason}`);
  if (node.reachable && !isRoot && replication.phase !== 'streaming') details.push(`phase ${replication.phase}${replication.lastFailure ? `: ${replication.lastFailure}` : ''}`);
  if (details.length > 0) children.push(element('span', { class: 'detail' }, details.join(' · ')));
  return element('div', { class: 'card' }, ...children);
}

/** The node's card, or one saying its status could not be shown: one node's odd field never blanks the tree. */
function safeCard(node) {
  try {
    return card(node);
  } catch (error) {
    return element('div', { class: 'card' }, element('span', { class: 'name' }, nameOf(node)), element('span', { class: 'detail' }, `malformed status: ${error.message}`));
  }
}

function subtree(node, byParent) {
  const state = stateOf(node);
  const item = element('li', { 'data-node-id': node.id, 'data-url': node.url, 'data-state': state, 'data-seq': node.status?.seq ?? -1 }, safeCard(node));
  const children = byParent.get(node.id) ?? [];
  if (children.length > 0) item.append(element('ul', {}, ...children.map((child) => subtree(child, byParent))));
  return item;
}

function render(nowMs) {
  const byParent = new Map();
  const tops = [];
  const byUrl = (a, b) => String(a.url).localeCompare(String(b.url), 'en', { numeric: true });
  for (const node of known.values()) {
    if (node.parentId === undefined || !known.has(node.parentId)) tops.push(node);
    else byParent.set(node.parentId, [...(byParent.get(node.parentId) ?? []), node]);
  }
  for (const list of byParent.values()) list.sort(byUrl);
  tops.sort((a, b) => (a.status?.role === 'root' ? -1 : b.status?.role === 'root' ? 1 : byUrl(a, b)));
  $('tree').replaceChildren(...tops.map((node) => subtree(node, byParent)));

  const nodes = [...known.values()];
  const count = (state) => nodes.filter((node) => stateOf(node) === state).length;
  const root = nodes.find((node) => node.reachable && node.status.role === 'root');
  $('summary').textContent = [
    `${nodes.length} nodes`,
    root === undefined ? 'root unreachable' : `root seq ${typeof root.status.seq === 'number' ? root.status.seq.toLocaleString('en') : '?'}`,
    `${count('lagging')} lagging`,
    `${count('diverged')} diverged`,
    `${count('unreachable')} unreachable`,
    ...(count('needs-token') > 0 ? [`${count('needs-token')} need a token`] : []),
  ].join(' · ');
  $('updated').textContent = `updated ${new Date(nowMs).toLocaleTimeString('en-GB')}`;
  if (lastWrite !== undefined) {
    const reachable = nodes.filter((node) => node.reachable);
    const arrived = reachable.filter((node) => node.status.seq >= lastWrite.seq).length;
    $('write-info').textContent = `put "${lastWrite.key}" at seq ${lastWrite.seq}: on ${arrived} of ${reachable.length} reachable nodes`;
    $('write-info').dataset.arrived = String(arrived === reachable.length);
  }
}

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const round = await walk();
    const nowMs = Date.now();
    merge(round, nowMs);
    render(nowMs);
    const self = [...known.values()].find((node) => node.reachable && node.url !== undefined && new URL(node.url).origin === location.origin);
    if (self !== undefined && browse.prefix !== undefined && self.status.seq !== browse.seq) await listKeys(browse.prefix);
  } catch (error) {
    $('summary').textContent = `status walk failed: ${error.message ?? error}`;
  } finally {
    polling = false;
  }
}

function shown(text, encoding) {
  return encoding === 'base64' ? `(base64) ${text}` : text;
}

async function listKeys(prefix) {
  const info = $('browse-info');
  try {
    const page = await fetchJson(`/v1/kv?prefix=${encodeURIComponent(prefix)}&limit=${KEYS_PAGE_LIMIT}`);
    browse = { prefix, seq: page.seq };
    const rows = page.items.map((item) =>
      element(
        'tr',
        { 'data-key': item.keyEncoding === 'base64' ? undefined : item.key },
        element('td', {}, shown(item.key, item.keyEncoding)),
        element('td', { 'data-field': 'value' }, shown(item.value, item.valueEncoding)),
        element('td', {}, item.modSeq),
        element('td', {}, item.version),
      ),
    );
    document.querySelector('#keys tbody').replaceChildren(...rows);
    info.className = 'info';
    const count = `${page.items.length}${page.more ? '+' : ''} ${page.items.length === 1 && !page.more ? 'key' : 'keys'}`;
    info.textContent = `${count} under "${prefix}" at seq ${page.seq}${page.more ? ` (the first ${KEYS_PAGE_LIMIT})` : ''}`;
  } catch (error) {
    info.className = 'info error';
    info.textContent = String(error.message ?? error);
  }
}

async function put(key, value) {
  const info = $('write-info');
  try {
    // A transaction in JSON (POST /v1/txn), so that the write is application/json like every API client's.
    const result = await fetchJson('/v1/txn', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ success: [{ op: 'put', key, value }] }),
    });
    lastWrite = { key, seq: result.seq };
    info.className = 'info';
    info.textContent = `put "${key}" at seq ${result.seq}`;
    info.dataset.arrived = 'false';
    await poll();
  } catch (error) {
    info.className = 'info error';
    info.textContent = String(error.message ?? error);
  }
}

/** The origins the operator typed (separated by spaces or commas), as origins: a path or a typo is not kept. */
function originsTyped(text) {
  const origins = new Set();
  for (const word of text.split(/[\s,]+/)) {
    try {
      const url = new URL(word);
      if ((url.protocol === 'http:' || url.protocol === 'https:') && url.origin !== location.origin) origins.add(url.origin);
    } catch {
      // Not a URL: dropped, and the field shows what was kept.
    }
  }
  return [...origins];
}

function start() {
  $('lag-entries-warn').textContent = String(LAG_ENTRIES_WARN);
  $('lag-ms-warn').textContent = formatMs(LAG_MS_WARN);
  $('this-node').textContent = location.host;
  $('token').value = token();
  $('token-origins').value = tokenOrigins().join(' ');
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token').value.trim();
    if (value === '') sessionStorage.removeItem(TOKEN_STORAGE_KEY);
    else sessionStorage.setItem(TOKEN_STORAGE_KEY, value);
    const origins = originsTyped($('token-origins').value);
    sessionStorage.setItem(TOKEN_ORIGINS_STORAGE_KEY, origins.join(' '));
    $('token-origins').value = origins.join(' ');
    void poll();
  });
  $('browse-form').addEventListener('submit', (event) => {
    event.preventDefault();
    void listKeys($('prefix').value);
  });
  $('write-form').addEventListener('submit', (event) => {
    event.preventDefault();
    void put($('write-key').value, $('write-value').value);
  });
  void listKeys('');
  void poll();
  setInterval(() => void poll(), POLL_INTERVAL_MS);
}

start();
