/**
 * deploy/grafana/mercury.json and deploy/prometheus/alerts.yml: every rule and panel query passes the PromQL check of
 * test/support/promql.ts (balanced brackets, terminated strings, ranges that are durations, known functions and
 * aggregations, label lists after by/without/on/ignoring), and every metric they name exists in the /metrics of a
 * running root, replica or root with TLS (real processes). Rules have the fields Prometheus requires and a severity.
 * The scrape job (deploy/prometheus/scrape.yml) is checked live: a root with TLS and tokens required, scraped the way
 * the job says (https, its bearer_token_file made as deploy/README.md says, its CA and server_name).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { load } from 'js-yaml';
import { issueCertificate } from '../src/net/tls-certs.js';
import { LOOPBACK_HOSTS, testCertificates } from './support/certs.js';
import { request } from './support/http.js';
import { SYNTHETIC_METRICS, checkPromql, exposedMetrics } from './support/promql.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { eventually, statusOf } from './support/tree.js';

const DEPLOY_DIR = fileURLToPath(new URL('../../deploy/', import.meta.url));
const SEVERITIES = new Set(['warning', 'critical']);
const DURATION = /^(\d+(ms|s|m|h|d|w|y))+$/;

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { refId: string; expr: string }[];
}

function alertRules(): Rule[] {
  const file = load(readFileSync(`${DEPLOY_DIR}prometheus/alerts.yml`, 'utf8')) as { groups: { name: string; rules: Rule[] }[] };
  assert.ok(Array.isArray(file.groups) && file.groups.length > 0, 'alerts.yml has groups');
  const groupNames = file.groups.map((group) => group.name);
  assert.equal(new Set(groupNames).size, groupNames.length, 'group names are unique');
  return file.groups.flatMap((group) => group.rules);
}

function dashboard(): { uid: string; title: string; panels: Panel[]; templating: { list: { name: string }[] } } {
  return JSON.parse(readFileSync(`${DEPLOY_DIR}grafana/mercury.json`, 'utf8')) as ReturnType<typeof dashboard>;
}

describe('deploy: grafana dashboard and prometheus alerts', () => {
  const dir = makeTempDir('observability');
  let root: ServeProcess | undefined;
  let replica: ServeProcess | undefined;
  /** A root with TLS: the certificate's metrics (expiry, reloads) exist only on a node that has one. */
  let tlsRoot: ServeProcess | undefined;
  const exposed = new Set<string>(SYNTHETIC_METRICS);

  before(async () => {
    root = await startServe(`${dir}/root`);
    replica = await startServe(`${dir}/replica`, ['--upstream', root.replication]);
    const certs = testCertificates();
    tlsRoot = await startServe(`${dir}/tls-root`, ['--tls-cert', certs.node.certPath, '--tls-key', certs.node.keyPath, '--tls-ca', certs.ca.certPath]);
    await eventually(
      async () => (await statusOf(replica!)).replication.phase === 'streaming',
      async () => JSON.stringify((await statusOf(replica!)).replication),
    );
    for (const node of [root, replica]) {
      const metrics = await request(node.url, 'GET', '/metrics');
      assert.equal(metrics.status, 200);
      for (const name of exposedMetrics(metrics.body.toString())) exposed.add(name);
    }
    const tlsMetrics = await scrape(tlsRoot.url, '/metrics', { ca: readFileSync(certs.ca.certPath) });
    assert.equal(tlsMetrics.status, 200, tlsMetrics.body);
    for (const name of exposedMetrics(tlsMetrics.body)) exposed.add(name);
  });

  after(async () => {
    await Promise.all([root, replica, tlsRoot].map((node) => (node === undefined ? Promise.resolve() : stopProcess(node.child))));
    removeDir(dir);
  });

  test('promql check: accepts what Prometheus accepts and names the metrics; refuses the usual typos', () => {
    assert.deepEqual(checkPromql('histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{job=~"x"}[5m]))) > 0.1'), ['a_bucket']);
    assert.deepEqual(checkPromql('count(b == 0) or vector(0)'), ['b']);
    assert.deepEqual(checkPromql('sum(rate(c[$__rate_interval])) / on (instance) group_left d'), ['c', 'd']);
    for (const bad of ['rate(a[5m]', 'sum(a))', 'a{job="x}', 'rate(a[5])', 'rte(a[5m])', 'sum by instance (a)', 'a{job}'])
      assert.throws(() => checkPromql(bad), Error, bad);
  });

  test('alerts: every rule parses, has its fields, and names only metrics a root or replica exposes', () => {
    const rules = alertRules();
    assert.ok(rules.length >= 6);
    const names = rules.map((rule) => rule.alert);
    assert.equal(new Set(names).size, names.length, 'alert names are unique');
    const covered = new Set<string>();
    for (const rule of rules) {
      assert.ok(typeof rule.alert === 'string' && /^[A-Z][A-Za-z0-9]+$/.test(rule.alert), `alert name ${rule.alert}`);
      assert.ok(rule.for === undefined || DURATION.test(rule.for), `${rule.alert}: for ${rule.for}`);
      assert.ok(SEVERITIES.has(rule.labels?.severity ?? ''), `${rule.alert}: severity warning or critical`);
      assert.ok(rule.annotations?.summary && rule.annotations.description, `${rule.alert}: summary and description`);
      const metrics = checkPromql(rule.expr);
      assert.ok(metrics.length > 0, `${rule.alert}: selects a metric`);
      for (const metric of metrics) {
        assert.ok(exposed.has(metric), `${rule.alert}: ${metric} is not in a node's /metrics`);
        covered.add(metric);
      }
    }
    // What issue 13 asks the alerts to cover.
    for (const metric of [
      'mercury_replication_lag_entries',
      'mercury_replication_diverged',
      'mercury_replication_snapshots_installed_total',
      'mercury_commit_seconds_bucket',
      'mercury_storage_errors_total',
      'mercury_watch_slow_closes_total',
      'mercury_replication_signature_refusals',
      'mercury_tls_certificate_expiry_seconds',
      'mercury_forwards_in_flight',
    ])
      assert.ok(covered.has(metric), `an alert watches ${metric}`);
  });

  test('grafana: the dashboard is well formed and every panel query names only exposed metrics', () => {
    const board = dashboard();
    assert.equal(board.uid, 'mercury-overview');
    assert.ok(board.templating.list.some((variable) => variable.name === 'datasource'), 'the Prometheus data source is a variable');
    const ids = board.panels.map((panel) => panel.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    let queries = 0;
    for (const panel of board.panels) {
      assert.ok(panel.gridPos.x + panel.gridPos.w <= 24, `${panel.title}: fits the 24-column grid`);
      if (panel.type === 'row') continue;
      assert.ok((panel.targets ?? []).length > 0, `${panel.title}: has a query`);
      for (const target of panel.targets!) {
        queries++;
        for (const metric of checkPromql(target.expr)) assert.ok(exposed.has(metric), `${panel.title}: ${metric} is not in a node's /metrics`);
      }
    }
    assert.ok(queries >= 15, `${queries} queries`);
  });
});

interface ScrapeJob {
  job_name: string;
  scheme: string;
  metrics_path: string;
  bearer_token_file: string;
  tls_config: { ca_file: string; server_name: string };
}

function scrapeJob(): ScrapeJob {
  const file = load(readFileSync(`${DEPLOY_DIR}prometheus/scrape.yml`, 'utf8')) as { scrape_configs: ScrapeJob[] };
  const job = file.scrape_configs.find((candidate) => candidate.job_name === 'mercury');
  assert.ok(job !== undefined, 'scrape.yml has a job "mercury"');
  return job;
}

/** A GET over HTTPS as Prometheus makes it: no client certificate, the CA and server name of the job's tls_config. */
function scrape(url: string, path: string, options: { ca?: Buffer; servername?: string; token?: string; verify?: boolean }): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: hostname,
        port,
        path,
        agent: false,
        ca: options.ca,
        servername: options.servername,
        rejectUnauthorized: options.verify ?? true,
        headers: options.token === undefined ? {} : { authorization: `Bearer ${options.token}` },
      },
      (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('deploy: prometheus scrapes over HTTPS with a bearer token', () => {
  const dir = makeTempDir('scrape');
  let root: ServeProcess | undefined;
  const certs = testCertificates();
  // The certificate names the Service the job's server_name checks against, besides loopback.
  const job = scrapeJob();
  const node = issueCertificate(certs.ca, dir, 'scraped-node', { commonName: 'node', hosts: [...LOOPBACK_HOSTS, job.tls_config.server_name] });
  const tokenFile = join(dir, 'token');

  before(async () => {
    // The admin token made as deploy/README.md says, before the root starts (openssl, no mercury involved).
    execFileSync('sh', ['-c', `printf 'mcy_%s_%s\\n' "$(openssl rand -hex 8)" "$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\\n')" > '${tokenFile}'`]);
    root = await startServe(join(dir, 'root'), [
      '--auth',
      'required',
      '--tls-cert',
      node.certPath,
      '--tls-key',
      node.keyPath,
      '--tls-ca',
      certs.ca.certPath,
      '--admin-token-file',
      tokenFile,
    ]);
  });

  after(async () => {
    if (root !== undefined) await stopProcess(root.child);
    removeDir(dir);
  });

  test('scrape: the job uses https, a bearer_token_file and a tls_config with the CA and a name the certificate holds', () => {
    assert.equal(job.scheme, 'https');
    assert.equal(job.metrics_path, '/metrics');
    assert.match(job.bearer_token_file, /^\/etc\/prometheus\/secrets\/[^/]+\/token$/);
    assert.match(job.tls_config.ca_file, /^\/etc\/prometheus\/secrets\/[^/]+\/ca\.crt$/);
    assert.ok(job.tls_config.server_name.length > 0, 'pods are scraped by IP: server_name names the certificate');
  });

  test('scrape: a root with TLS and tokens required serves /metrics to the job, and nothing without the token; probes need neither', async () => {
    assert.match(root!.url, /^https:/);
    const token = readFileSync(tokenFile, 'utf8').trim();
    const ca = readFileSync(certs.ca.certPath);
    const scraped = await scrape(root!.url, job.metrics_path, { ca, servername: job.tls_config.server_name, token });
    assert.equal(scraped.status, 200, scraped.body);
    assert.ok(exposedMetrics(scraped.body).has('mercury_applied_seq'), 'the scrape returns the node\'s metrics');
    const anonymous = await scrape(root!.url, job.metrics_path, { ca, servername: job.tls_config.server_name });
    assert.equal(anonymous.status, 401, anonymous.body);
    assert.match(anonymous.body, /UNAUTHENTICATED/);
    // The kubelet: HTTPS, no token, no certificate check.
    for (const path of ['/healthz', '/readyz']) assert.equal((await scrape(root!.url, path, { verify: false })).status, 200, path);
  });
});
