/**
 * The `mercury` CLI as a user runs it: real child processes against a real `mercury serve` on port 0. Checks the
 * human output, that every `--json` output parses, exact bytes through get/put, and the exit codes: 1 with one line
 * "mercury: CODE: message" for an error the node reported, 2 for bad usage, 3 when the node cannot be reached.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { testCertificates } from './support/certs.js';
import { requestJson, type LogPage } from './support/http.js';
import { CLI_PATH, makeTempDir, removeDir, runCli, serveRefused, startServe, stopProcess, type CliResult, type ServeProcess } from './support/process.js';

/** One stderr line "mercury: ...", nothing on stdout. */
function assertFailed(result: CliResult, exitCode: number, line: RegExp): void {
  assert.equal(result.code, exitCode, `exit ${result.code}; stderr: ${result.stderr}`);
  assert.equal(result.stdout.length, 0, `stdout: ${result.stdout.toString()}`);
  assert.match(result.stderr, /^mercury: [^\n]+\n$/, `not one line: ${JSON.stringify(result.stderr)}`);
  assert.match(result.stderr, line);
}

function assertOk(result: CliResult): string {
  assert.equal(result.code, 0, `exit ${result.code}; stderr: ${result.stderr}`);
  assert.equal(result.stderr, '');
  return result.stdout.toString('utf8');
}

/** A port that nothing listens on: bind one, then let it go. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A free port P whose next one, P + 1, is held by the returned server (close it once done). */
async function portBelowBusyOne(): Promise<[number, Server]> {
  for (;;) {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const below = (busy.address() as AddressInfo).port - 1;
    const probe = createServer();
    const free = await new Promise<boolean>((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(below, '127.0.0.1', () => resolve(true));
    });
    if (free) {
      await new Promise((resolve) => probe.close(resolve));
      return [below, busy];
    }
    busy.close();
  }
}

/** A well-formed token no node knows, for token files that are refused before any request. */
const TEST_TOKEN = `mcy_${'c'.repeat(16)}_${'d'.repeat(43)}`;

/** Writes `text` to DIR/NAME, mode 0600 (a looser mode adds a warning line to those the tests expect). */
function secretFile(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

describe('cli', () => {
  let dataDir: string;
  let filesDir: string;
  let node: ServeProcess;
  /** Runs the CLI against the test node. */
  const cli = (args: readonly string[], input?: Buffer | string): Promise<CliResult> => runCli(['--url', node.url, ...args], { input });

  before(async () => {
    dataDir = makeTempDir('cli-data');
    filesDir = makeTempDir('cli-files');
    node = await startServe(dataDir);
  });

  after(async () => {
    await stopProcess(node.child, 'SIGTERM');
    removeDir(dataDir);
    removeDir(filesDir);
  });

  test('cli: put from an argument, get prints the value as is', async () => {
    const put = assertOk(await cli(['put', 'app/name', 'mercury ✓']));
    assert.match(put, /^OK seq \d+\n$/);
    const got = await cli(['get', 'app/name']);
    assertOk(got);
    assert.deepEqual(got.stdout, Buffer.from('mercury ✓'), 'no newline is added when stdout is not a terminal');
  });

  test('cli: put --file and put from stdin store exact bytes; get returns them byte for byte', async () => {
    const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const backwards = Buffer.from(every).reverse();
    const file = join(filesDir, 'bytes.bin');
    writeFileSync(file, every);
    assertOk(await cli(['put', 'bin/file', '--file', file]));
    assertOk(await cli(['put', 'bin/stdin'], Buffer.concat([every, backwards])));
    const [fromFile, fromStdin] = await Promise.all([cli(['get', 'bin/file']), cli(['get', 'bin/stdin'])]);
    assert.equal(fromFile.code, 0);
    assert.deepEqual(fromFile.stdout, every);
    assert.equal(fromStdin.code, 0);
    assert.deepEqual(fromStdin.stdout, Buffer.concat([every, backwards]));
    // An empty stdin is an empty value.
    assertOk(await cli(['put', 'bin/empty']));
    assert.equal((await cli(['get', 'bin/empty'])).stdout.length, 0);
  });

  test('cli: get --json carries the value in base64 and the record fields', async () => {
    const put = JSON.parse(assertOk(await cli(['put', 'json/k', 'é€', '--json']))) as { seq: number };
    assert.ok(Number.isSafeInteger(put.seq));
    const got = JSON.parse(assertOk(await cli(['get', 'json/k', '--json']))) as Record<string, unknown>;
    assert.equal(got.key, 'json/k');
    assert.deepEqual(Buffer.from(got.value as string, 'base64'), Buffer.from('é€', 'utf8'));
    assert.equal(got.modSeq, put.seq);
    assert.equal(got.createSeq, put.seq);
    assert.equal(got.version, 1);
    assert.ok((got.seq as number) >= put.seq);
  });

  test('cli: del deletes a key, and says so when there was none', async () => {
    assertOk(await cli(['put', 'del/k', 'v']));
    assert.match(assertOk(await cli(['del', 'del/k'])), /^deleted, seq \d+\n$/);
    assert.match(assertOk(await cli(['del', 'del/k'])), /^no such key, seq \d+\n$/);
    assert.deepEqual(JSON.parse(assertOk(await cli(['del', 'del/k', '--json']))), { seq: (JSON.parse(assertOk(await cli(['status', '--json']))) as { seq: number }).seq, deleted: false });
    assertFailed(await cli(['get', 'del/k']), 1, /^mercury: KEY_NOT_FOUND: /);
  });

  test('cli: del --prefix deletes every key under the prefix and nothing else', async () => {
    await Promise.all(['tree/a', 'tree/b/c', 'tree/b/d', 'treetop'].map((key) => cli(['put', key, 'v'])));
    assert.match(assertOk(await cli(['del', 'tree/', '--prefix'])), /^OK seq \d+\n$/);
    const listed = assertOk(await cli(['ls', 'tree']));
    assert.deepEqual(listed.trimEnd().split('\n').map((line) => line.split('\t')[0]), ['treetop']);
  });

  test('cli: ls lists keys under a prefix, human and --json, with --limit', async () => {
    (await Promise.all(Array.from({ length: 5 }, (_, i) => cli(['put', `ls/k${i}`, 'x'.repeat(i)])))).forEach(assertOk);
    const [humanResult, jsonResult, noneResult] = await Promise.all([cli(['ls', 'ls/']), cli(['ls', 'ls/', '--json', '--limit', '3']), cli(['ls', 'ls/none/'])]);
    const human = assertOk(humanResult).trimEnd().split('\n');
    assert.equal(human.length, 5);
    assert.match(human[2]!, /^ls\/k2\t2 B\tmodSeq \d+\tversion 1$/);
    const lines = assertOk(jsonResult).trimEnd().split('\n');
    assert.equal(lines.length, 3);
    const items = lines.map((line) => JSON.parse(line) as { key: string; value: string; modSeq: number; version: number });
    assert.deepEqual(items.map((item) => item.key), ['ls/k0', 'ls/k1', 'ls/k2']);
    assert.equal(Buffer.from(items[2]!.value, 'base64').toString(), 'xx');
    assert.equal(assertOk(noneResult), '');
  });

  test('cli: txn from a file and from stdin, success and failure branches', async () => {
    const file = join(filesDir, 'txn.json');
    writeFileSync(file, JSON.stringify({ compare: [{ key: 'txn/k', exists: false }], success: [{ op: 'put', key: 'txn/k', value: 'first' }], failure: [] }));
    assert.match(assertOk(await cli(['txn', '--file', file])), /^succeeded, seq \d+\n$/);
    const stdin = JSON.stringify({ compare: [{ key: 'txn/k', exists: false }], failure: [{ op: 'put', key: 'txn/lost', value: 'yes' }] });
    assert.match(assertOk(await cli(['txn'], stdin)), /^compare failed, failure branch applied, seq \d+\n$/);
    const result = JSON.parse(assertOk(await cli(['txn', '--json'], JSON.stringify({ success: [{ op: 'delete', key: 'txn/lost' }] })))) as { succeeded: boolean; seq: number };
    assert.equal(result.succeeded, true);
    assert.equal((await cli(['get', 'txn/k'])).stdout.toString(), 'first');
  });

  test('cli: log shows entries with their hashes; --json is the API page', async () => {
    const human = assertOk(await cli(['log', '--from', '1', '--limit', '3'])).trimEnd().split('\n');
    assert.equal(human.length, 3);
    assert.match(human[0]!, /^seq 1 {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}\d+ ops {2}by \? {2}signed {2}hash [0-9a-f]{64}$/);
    const page = JSON.parse(assertOk(await cli(['log', '--from', '2', '--limit', '2', '--json']))) as LogPage;
    assert.deepEqual(page.entries.map((entry) => entry.seq), [2, 3]);
    assert.deepEqual(page, await requestJson<LogPage>(node.url, 'GET', '/v1/log?from=2&limit=2'));
    assert.match(assertOk(await cli(['log', '--from', '999999'])), /^\(no entries; log holds 1\.\.\d+\)\n$/);
  });

  test('cli: status, human and --json', async () => {
    const status = JSON.parse(assertOk(await cli(['status', '--json']))) as Record<string, unknown>;
    const api = await requestJson(node.url, 'GET', '/v1/status');
    assert.equal(status.headHash, api.headHash);
    assert.equal(status.datasetId, api.datasetId);
    assert.equal(status.role, 'root');
    const human = assertOk(await cli(['status']));
    assert.match(human, /^seq +\d+$/m);
    assert.match(human, new RegExp(`^headHash +${String(api.headHash)}$`, 'm'));
  });

  test('cli: MERCURY_URL selects the node when --url is absent', async () => {
    const result = await runCli(['status', '--json'], { env: { MERCURY_URL: `${node.url}/` } });
    assert.equal((JSON.parse(assertOk(result)) as { role: string }).role, 'root');
  });

  test('cli: --help prints the usage and exits 0', async () => {
    assert.match(assertOk(await runCli(['--help'])), /^usage: mercury <command>/);
  });

  test('cli: an error the node reports exits 1 with one line "mercury: CODE: message"', async () => {
    const put = JSON.parse(assertOk(await cli(['put', 'cas/k', 'v1', '--json']))) as { seq: number };
    const cases: [Promise<CliResult>, RegExp][] = [
      [cli(['get', 'no/such/key']), /^mercury: KEY_NOT_FOUND: .*no\/such\/key/],
      [cli(['get', 'no/such/key', '--json']), /^mercury: KEY_NOT_FOUND: /],
      [cli(['put', 'cas/k', 'v2', '--if-mod-seq', String(put.seq + 1000)]), /^mercury: COMPARE_FAILED: /],
      [cli(['del', 'cas/k', '--if-mod-seq', String(put.seq + 1000)]), /^mercury: COMPARE_FAILED: /],
      [cli(['put', 'k'.repeat(1025), 'v']), /^mercury: KEY_TOO_LARGE: /],
      [cli(['txn'], '{"success":[{"op":"frob"}]}'), /^mercury: INVALID_ARGUMENT: success\[0\]\.op/],
      [cli(['log', '--limit', '5000']), /^mercury: INVALID_ARGUMENT: /],
    ];
    for (const [result, line] of cases) assertFailed(await result, 1, line);
    assertOk(await cli(['put', 'cas/k', 'v2', '--if-mod-seq', String(put.seq)]));
  });

  test('cli: bad usage exits 2 with one line', async () => {
    const cases: [string[], RegExp][] = [
      [['get'], /get needs a KEY/],
      [['put'], /put needs a KEY/],
      [['del'], /del needs a KEY/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['get', 'k', '--bogus'], /bogus/],
      [['ls', '--limit', 'ten'], /--limit must be a non-negative integer/],
      // It listed nothing and exited 0 (stop 44's configuration audit); `log --limit 0` was refused already.
      [['ls', '--limit', '0'], /^mercury: --limit must be at least 1, got "0"$/m],
      [['put', 'k', 'v', '--if-mod-seq', '-1'], /if-mod-seq/],
      [['log', '--from', 'x'], /--from/],
      // No entry has seq 0: it was sent, and the node's 400 came back as exit 1 (retention audit, 2026-12-07).
      [['log', '--from', '0'], /^mercury: --from must be at least 1, got "0"$/m],
      // The client's own check answered for it, naming its option: "fromSeq must be an integer from 1 to ...".
      [['watch', 'a', '--from', '0'], /^mercury: --from must be at least 1, got "0"$/m],
      [['demo', '--replicas', '0'], /--replicas must be from 1 to 20/],
      [['demo', '--replicas', '21'], /--replicas must be from 1 to 20/],
      // An option the command does not read is refused, not ignored (it was before stop 38).
      [['get', 'k', '--data-dir', 'other'], /^mercury: get does not take --data-dir \(it takes --url, --ca, --cert, --key, --token, --token-file\); see mercury --help$/m],
      [['token', 'list', '--scope', 'admin'], /token list does not take --scope/],
      [['serve', '--data-dir', 'x'], /serve does not take --url/],
      [['demo'], /demo does not take --url \(it takes --replicas, --dir\)/],
      [['snapshot', 'inspect', 'file'], /^mercury: snapshot inspect does not take --url; see mercury --help$/m],
    ];
    // The cases of demo's own checks run without --url, which demo does not take.
    const results = await Promise.all(cases.map(([args]) => (args[0] === 'demo' && args.length > 1 ? runCli(args) : cli(args))));
    results.forEach((result, i) => assertFailed(result, 2, cases[i]![1]));
    assertFailed(await cli(['txn'], '{not json'), 2, /transaction is not valid JSON/);
  });

  test('cli: txn reads its JSON by the node\'s rules: a member name given twice or bytes that are not UTF-8 exit 2, nothing sent (found by review: JSON.parse kept the last name and the node never saw the first)', async () => {
    assertFailed(await cli(['txn'], '{"success":[{"op":"put","key":"twice/k","value":"1"}],"success":[]}'), 2, /transaction is not valid JSON \(INVALID_JSON\): .*member name "success" twice/);
    const notUtf8 = Buffer.concat([Buffer.from('{"success":[{"op":"put","key":"twice/k","value":"'), Buffer.from([0xff]), Buffer.from('"}]}')]);
    assertFailed(await cli(['txn'], notUtf8), 2, /transaction is not valid JSON \(INVALID_UTF8\)/);
    assertFailed(await cli(['get', 'twice/k']), 1, /KEY_NOT_FOUND/);
  });

  test('cli: serve with a bad option value exits 2 with one line', async () => {
    const dir = join(filesDir, 'never-created');
    const [listen, valueBytes] = await Promise.all([
      runCli(['serve', '--data-dir', dir, '--listen', 'nonsense']),
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--max-value-bytes', '0']),
    ]);
    assertFailed(listen, 2, /^mercury: CONFIG_INVALID: --listen must be HOST:PORT/);
    // "must be a non-negative integer" was said of flags that then refused 0 (retention audit, 2026-12-07).
    assertFailed(valueBytes, 2, /^mercury: --max-value-bytes must be at least 1, got "0"$/m);
    assertFailed(await runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--log-retain-entries', '0']), 2, /^mercury: --log-retain-entries must be at least 1, got "0"$/m);
    const [upstream, resync, replicationListen] = await Promise.all([
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:7071,not-an-address']),
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--resync']),
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:99999']),
    ]);
    assertFailed(upstream, 2, /^mercury: CONFIG_INVALID: upstream \(--upstream\) must be HOST:PORT, got "not-an-address"/);
    assertFailed(resync, 2, /^mercury: CONFIG_INVALID: --resync needs --upstream/);
    assertFailed(replicationListen, 2, /^mercury: CONFIG_INVALID: --replication-listen port/);
    // Stop 44's configuration audit: "::1:0" got the generic message, and "127.0.0.1:00007070" listened on 7070.
    const [unbracketed, zeros] = await Promise.all([
      runCli(['serve', '--data-dir', dir, '--listen', '::1:0']),
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:00007070']),
    ]);
    assertFailed(unbracketed, 2, /^mercury: CONFIG_INVALID: --listen must be HOST:PORT \(an IPv6 address goes in brackets: \[::1\]:7070\), got "::1:0"$/m);
    assertFailed(zeros, 2, /^mercury: CONFIG_INVALID: --listen port must be written without leading zeros, got "127.0.0.1:00007070"$/m);
    assert.equal(existsSync(dir), false, 'no node started');
  });

  // Found by an audit (2026-12-07, configuration): --root-url was checked by a pattern that let through a user and
  // password (a root records its --root-url in a signed entry: every replica would hold them), a query or a fragment
  // (a replica forwarded writes to "/?q/v1/txn" and answered NOT_FOUND), and port 0 or past 65535; --advertise-url
  // took port 0, and quoted a refused URL's password back.
  test('cli: serve refuses a --root-url or --advertise-url with credentials, a query, a fragment or a port no one can reach, exit 2, the password not shown', async () => {
    const dir = join(filesDir, 'never-rooted');
    const rootUrls = ['http://admin:hunter2@root.example:7070', 'https://root.example:7070?q', 'https://root.example:7070#f', 'http://root.example:99999', 'http://root.example:0'];
    const advertiseUrls = ['http://admin:hunter2@node.example:7070', 'http://node.example:0'];
    const results = await Promise.all([
      ...rootUrls.map((url) => serveRefused(dir, ['--root-url', url])),
      ...advertiseUrls.map((url) => serveRefused(dir, ['--advertise-url', url])),
    ]);
    results.forEach((result, i) => {
      const flag = i < rootUrls.length ? 'root-url' : 'advertise-url';
      assert.equal(result.code, 2, `${[...rootUrls, ...advertiseUrls][i]}: ${result.stderr}`);
      assert.match(result.stderr, new RegExp(`^mercury: CONFIG_INVALID: \\w+ \\(--${flag}\\) must be an http:// or https:// URL`, 'm'));
      assert.doesNotMatch(result.stderr, /hunter2/);
    });
    assert.equal(existsSync(dir), false, 'no node started');
  });

  // Found by audit: `--upstream ","` (or `--upstream "$UPSTREAM"` unset) started a writable root with its own admin
  // token and signing key; `--listen A --listen B` listened on B without a word; a number past 2^53 was quoted rounded.
  test('cli: an empty upstream item, an option given twice, or an integer past 2^53 exits 2 naming it; nothing starts', async () => {
    const dir = join(filesDir, 'never-created-either');
    const serveArgs = ['serve', '--data-dir', dir, '--listen', '127.0.0.1:0'];
    const [comma, empty, twice, huge, limitTwice] = await Promise.all([
      runCli([...serveArgs, '--upstream', ',']),
      runCli([...serveArgs, '--upstream', '']),
      runCli([...serveArgs, '--listen', '127.0.0.1:0']),
      runCli([...serveArgs, '--max-value-bytes', '18446744073709551616']),
      cli(['log', '--limit', '5', '--limit', '6']),
    ]);
    assertFailed(comma, 2, /^mercury: CONFIG_INVALID: upstream \(--upstream\) must be HOST:PORT, got ""/);
    assertFailed(empty, 2, /^mercury: CONFIG_INVALID: upstream \(--upstream\) must be HOST:PORT, got ""/);
    assertFailed(twice, 2, /^mercury: --listen is given twice; give it once/);
    assertFailed(huge, 2, /^mercury: --max-value-bytes must be at most 9007199254740991, got "18446744073709551616"/);
    assertFailed(limitTwice, 2, /^mercury: --limit is given twice/);
    // Past 2^31 - 1 ms Node runs a timer after 1 ms: `sync --exec-debounce-ms 3000000000` ran its command at once.
    const [debounce, waitTimeout] = await Promise.all([
      cli(['sync', 'app/', join(filesDir, 'never-synced'), '--exec', 'true', '--exec-debounce-ms', '3000000000']),
      cli(['snapshot', 'save', join(filesDir, 'never-saved'), '--wait-timeout-ms', '2147483648']),
    ]);
    assertFailed(debounce, 2, /^mercury: --exec-debounce-ms must be at most 2147483647 \(24\.8 days\), got "3000000000"/);
    assertFailed(waitTimeout, 2, /^mercury: --wait-timeout-ms must be at most 2147483647 \(24\.8 days\), got "2147483648"/);
    assert.equal(existsSync(join(filesDir, 'never-synced')) || existsSync(join(filesDir, 'never-saved')), false);
    // `del --prefix --if-mod-seq` deleted the whole prefix without its condition; `put KEY VALUE --file F` dropped VALUE.
    assert.equal((await cli(['put', 'guarded/a', 'kept'])).code, 0);
    assertFailed(await cli(['del', 'guarded/', '--prefix', '--if-mod-seq', '1']), 2, /^mercury: del --prefix takes no --if-mod-seq/);
    assertFailed(await cli(['put', 'guarded/a', 'other', '--file', CLI_PATH]), 2, /^mercury: put takes its value from VALUE or from --file, not both/);
    const kept = await cli(['get', 'guarded/a']);
    assert.equal(kept.stdout.toString(), 'kept', 'nothing was deleted or replaced');
    assert.equal(existsSync(dir), false, 'no data directory was made');
  });

  // Found by an audit (2026-12-07, configuration): an argument past those a command takes was dropped without a word.
  // `put greeting hello world` (the value unquoted) stored "hello", `del a b` deleted a alone, and `serve /var/lib/x`
  // (a data directory given as an argument) started a node on ./data.
  test('cli: an argument past those the command takes exits 2 naming it; nothing is written, nothing starts', async () => {
    assertOk(await cli(['put', 'extra/b', 'kept']));
    const dir = join(filesDir, 'never-served');
    const [put, del, get, serve, tokenList] = await Promise.all([
      cli(['put', 'extra/a', 'hello', 'world']),
      cli(['del', 'extra/b', 'extra/c']),
      cli(['get', 'extra/b', 'extra/c']),
      serveRefused(dir, ['--auth', 'off', join(filesDir, 'meant-as-data-dir')]),
      cli(['token', 'list', 'all']),
    ]);
    assertFailed(put, 2, /^mercury: put takes KEY \[VALUE\], got 3 arguments: "world" is past them; quote a value that holds spaces \(put KEY 'a value'\)$/m);
    assertFailed(del, 2, /^mercury: del takes KEY, got 2 arguments: "extra\/c" is past them; delete one key at a time, or every key under a prefix with --prefix$/m);
    assertFailed(get, 2, /^mercury: get takes KEY, got 2 arguments: "extra\/c" is past them$/m);
    assert.equal(serve.code, 2, serve.stderr);
    assert.match(serve.stderr, /^mercury: serve takes no argument, got "\S+meant-as-data-dir"; give the data directory with --data-dir DIR$/m);
    assertFailed(tokenList, 2, /^mercury: token list takes no argument, got "all"$/m);
    assertFailed(await cli(['get', 'extra/a']), 1, /KEY_NOT_FOUND/);
    assert.equal((await cli(['get', 'extra/b'])).stdout.toString(), 'kept', 'nothing was deleted');
    assert.equal(existsSync(dir), false, 'no node started');
  });

  // Found by audit (stop 37): a URL with a path wrote another key (`put a/b` against http://host/v1/kv wrote
  // v1/kv/a/b); a password in the URL was printed and sent as Basic authentication; a URL that was no URL, a token
  // with a control character, a CA file with no certificate and a key that does not match its certificate all failed
  // as "cannot reach" the node (exit 3).
  test('cli: a bad URL, token or TLS file from a flag or the environment exits 2 naming it, before any request', async () => {
    const { port } = new URL(node.url);
    const env = (vars: Record<string, string>) => ({ env: vars });
    const emptyFile = join(filesDir, 'empty.pem');
    writeFileSync(emptyFile, '');
    const junkPem = join(filesDir, 'junk.pem');
    // 0600: used as a --key too, where a looser mode adds a warning line to the one the test expects.
    writeFileSync(junkPem, 'not a certificate\n', { mode: 0o600 });
    const results = await Promise.all([
      runCli(['put', 'a/b', 'EVIL'], env({ MERCURY_URL: `http://127.0.0.1:${port}/v1/kv` })),
      runCli(['get', 'a/b'], env({ MERCURY_URL: `http://user:s3cret@127.0.0.1:${port}` })),
      runCli(['--url', 'file:///etc/passwd', 'get', 'a/b']),
      runCli(['--url', '', 'get', 'a/b']),
      runCli(['--url', `${node.url},${node.url}`, 'get', 'a/b']),
      runCli(['--url', node.url, 'get', 'a/b'], env({ MERCURY_TOKEN: 'mcy_\u0001\u0002' })),
      runCli(['--url', node.url, '--token', 'x', '--token-file', junkPem, 'get', 'a/b']),
      runCli(['--url', node.url.replace('http:', 'https:'), 'get', 'a/b'], env({ MERCURY_CA: emptyFile })),
      runCli(['--url', node.url.replace('http:', 'https:'), 'get', 'a/b'], env({ MERCURY_CERT: junkPem, MERCURY_KEY: junkPem })),
      runCli(['--url', node.url, '--ca', '', 'get', 'a/b']),
      runCli(['--url', node.url, '--ca', junkPem, '--cert', junkPem, '--key', junkPem, 'get', 'a/b']),
      runCli(['--url', node.url.replace('http:', 'https:'), '--ca', testCertificates().ca.certPath, '--cert', testCertificates().client.certPath, '--key', junkPem, 'get', 'a/b']),
    ]);
    const [path, password, scheme, emptyUrl, list, controlToken, twoTokens, noCertificate, badPair, emptyCa, tlsOverHttp, badKey] = results;
    assertFailed(path, 2, /^mercury: \$MERCURY_URL "http:\/\/127\.0\.0\.1:\d+\/v1\/kv" must have no path: a node serves its API from the root/);
    assertFailed(password, 2, /^mercury: \$MERCURY_URL "http:\/\/user:\*\*\*@127\.0\.0\.1:\d+" must not carry a user name or password/);
    assert.doesNotMatch(password.stderr, /s3cret/);
    assertFailed(scheme, 2, /^mercury: --url "file:\/\/\/etc\/passwd" must use http:, https:/);
    assertFailed(emptyUrl, 2, /^mercury: --url has an empty URL/);
    assertFailed(list, 2, /^mercury: --url gives 2 URLs; get takes one/);
    assertFailed(controlToken, 2, /^mercury: \$MERCURY_TOKEN does not hold a token/);
    assertFailed(twoTokens, 2, /^mercury: --token and --token-file say the same thing/);
    assertFailed(noCertificate, 2, /^mercury: CONFIG_INVALID: --ca \(or \$MERCURY_CA\) \S+empty\.pem holds no certificate/);
    // The file at fault is named (audit, 2026-12-07: "--cert and --key are not a certificate and its private key" named neither).
    assertFailed(badPair, 2, /^mercury: CONFIG_INVALID: --cert \(or \$MERCURY_CERT\) \S+junk\.pem is not a PEM certificate \(.*\); give the certificate file$/m);
    assertFailed(badKey, 2, /^mercury: CONFIG_INVALID: --key \(or \$MERCURY_KEY\) \S+junk\.pem is not a PEM private key \(.*\); give the certificate's key file$/m);
    assertFailed(emptyCa, 2, /^mercury: --ca is empty/);
    assertFailed(tlsOverHttp, 2, /^mercury: --ca and --cert and --key are for https:\/\/ URLs, and http:\/\/127\.0\.0\.1:\d+ is plaintext, so TLS would not be used/);
    assert.equal((await cli(['get', 'v1/kv/a/b'])).code, 1, 'nothing was written under the path');
    // `snapshot inspect` reads a file and asks no node: a bad $MERCURY_CA is not its concern.
    const inspect = await runCli(['snapshot', 'inspect', join(filesDir, 'no-such-snapshot')], env({ MERCURY_CA: emptyFile }));
    assert.doesNotMatch(inspect.stderr, /MERCURY_CA/);
  });

  test('cli: TLS variables or a token for a plaintext URL get a warning: TLS would not be used, the token would go in clear', async () => {
    const tlsVariable = await runCli(['--url', node.url, 'get', 'a/b'], { env: { MERCURY_CA: testCertificates().ca.certPath } });
    assert.match(tlsVariable.stderr, /^mercury: warning: \$MERCURY_CA, \$MERCURY_CERT and \$MERCURY_KEY are not used for the plaintext URL http:\/\/127\.0\.0\.1:\d+; give an https:\/\/ URL/m);
    const local = await runCli(['--url', node.url, '--token', `mcy_${'a'.repeat(40)}`, 'get', 'a/b']);
    assert.doesNotMatch(local.stderr, /warning/, 'loopback is plaintext by design');
    // Another host (this machine's own non-loopback address, a port nothing listens on): the token would cross a network.
    const address = Object.values(networkInterfaces()).flat().find((item) => item !== undefined && !item.internal && item.family === 'IPv4')?.address;
    if (address === undefined) return; // a machine with loopback only: nothing to send across
    const remote = await runCli(['--url', `http://${address}:9`, '--token', `mcy_${'a'.repeat(40)}`, 'get', 'a/b']);
    assert.match(remote.stderr, new RegExp(`^mercury: warning: the token is sent in clear to http://${address.replaceAll('.', '\\.')}:9; use the node's https:// URL`, 'm'));
  });

  // Found by an audit (2026-12-06): a token file was used whatever its mode.
  test('cli: a --token-file or $MERCURY_TOKEN_FILE that lets its group or others in gets a warning naming it, its mode and chmod 600; the command runs', async () => {
    const tokenFile = join(filesDir, 'open-token');
    writeFileSync(tokenFile, `mcy_${'a'.repeat(16)}_${'b'.repeat(43)}\n`);
    chmodSync(tokenFile, 0o644);
    const warning = new RegExp(`^mercury: warning: --token-file ${tokenFile} holds a secret, and its mode 0644 lets its group or others in: chmod 600 ${tokenFile}$`, 'm');
    const open = await cli(['--token-file', tokenFile, 'status']);
    assert.equal(open.code, 0, open.stderr);
    assert.match(open.stderr, warning);
    const fromEnv = await runCli(['--url', node.url, 'status'], { env: { MERCURY_TOKEN_FILE: tokenFile } });
    assert.match(fromEnv.stderr, /^mercury: warning: \$MERCURY_TOKEN_FILE \S+open-token holds a secret, and its mode 0644/m);
    // serve's --replication-token-file: a line of its JSON log, before anything else is checked.
    // (It listens on the test node's port, so it stops there.)
    const busy = `127.0.0.1:${new URL(node.url).port}`;
    const replica = await runCli(['serve', '--data-dir', join(filesDir, 'open-replication-token'), '--listen', busy, '--auth', 'off', '--upstream', '127.0.0.1:1', '--replication-token-file', tokenFile]);
    assert.equal(replica.code, 1, replica.stderr);
    const logged = replica.stderr.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(logged.map(({ level, file, mode }) => ({ level, file, mode })), [{ level: 'warn', file: tokenFile, mode: '0644' }]);
    assert.match(String(logged[0]!.message), /^--replication-token-file \S+open-token holds a secret, and its mode 0644 lets its group or others in: chmod 600 /);
    chmodSync(tokenFile, 0o600);
    const closed = await cli(['--token-file', tokenFile, 'status']);
    assert.equal(closed.code, 0, closed.stderr);
    assert.equal(closed.stderr, '');
  });

  test('cli: serve with a replication token but no upstream, an empty $MERCURY_REPLICATION_TOKEN, or an admin token file on a replica, exits 2', async () => {
    const tokenFile = join(filesDir, 'replication-token');
    writeFileSync(tokenFile, `mcy_${'a'.repeat(40)}\n`);
    const args = (name: string) => ['serve', '--data-dir', join(filesDir, name), '--listen', '127.0.0.1:0', '--auth', 'off'];
    const [noUpstream, emptyEnv, adminOnReplica] = await Promise.all([
      runCli([...args('token-no-upstream'), '--replication-token-file', tokenFile]),
      runCli([...args('empty-env-token'), '--upstream', '127.0.0.1:1'], { env: { MERCURY_REPLICATION_TOKEN: ' ' } }),
      // Found by an audit (2026-12-06): a replica ignored --admin-token-file without a word.
      runCli([...args('admin-token-replica'), '--upstream', '127.0.0.1:1', '--admin-token-file', tokenFile]),
    ]);
    assertFailed(noUpstream, 2, /^mercury: CONFIG_INVALID: --replication-token-file needs --upstream/);
    assertFailed(emptyEnv, 2, /^mercury: CONFIG_INVALID: \$MERCURY_REPLICATION_TOKEN does not hold a token/);
    assertFailed(adminOnReplica, 2, /^mercury: CONFIG_INVALID: --admin-token-file is for a root: a replica takes its tokens from its root/);
    for (const name of ['token-no-upstream', 'empty-env-token', 'admin-token-replica']) assert.equal(existsSync(join(filesDir, name)), false, `no node started on ${name}`);
  });

  // Found by an audit (2026-12-07): a first start's --admin-token-file was read only at the bootstrap, after the data
  // directory, its store and the signing key were made, so a start refused for a bad file left them all behind.
  test('cli: a root\'s first start with a bad --admin-token-file (missing, empty, a directory, a FIFO, not a token) exits 2 naming it, and makes nothing', async () => {
    const fifo = join(filesDir, 'admin-token-fifo');
    execFileSync('mkfifo', [fifo]);
    const files = {
      missing: join(filesDir, 'admin-token-missing'),
      empty: secretFile(filesDir, 'admin-token-empty', ''),
      directory: filesDir,
      fifo,
      'not a token': secretFile(filesDir, 'admin-token-text', 'not a token\n'),
    };
    for (const [what, file] of Object.entries(files)) {
      const dataDir = join(filesDir, `admin-token-start-${what.replace(/ /g, '-')}`);
      const refused = await serveRefused(dataDir, ['--auth', 'required', '--admin-token-file', file]);
      assert.equal(refused.code, 2, `${what}: ${refused.stderr}`);
      assert.match(refused.stderr, new RegExp(`^mercury: CONFIG_INVALID: --admin-token-file ${file} `), what);
      assert.equal(existsSync(dataDir), false, `${what}: a refused start made ${dataDir}`);
    }
  });

  // Found by an audit (2026-12-07): an empty key file, or one of text, was refused with OpenSSL's "DECODER
  // routines::unsupported" after "is not a PEM private key", which said neither what was wrong nor what to give.
  test('cli: serve with an empty key file, or one that holds no PEM block, exits 2 saying so, naming the flag and file and the key it must hold', async () => {
    const empty = secretFile(filesDir, 'key-empty.pem', '');
    const text = secretFile(filesDir, 'key-text.pem', 'my signing key\n');
    const key = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const good = secretFile(filesDir, 'key-good.pem', key);
    const privateKey = /give an Ed25519 private key in PEM, PKCS#8 \(-----BEGIN PRIVATE KEY-----, as openssl genpkey -algorithm ed25519 writes\)$/m;
    const cases = [
      { args: ['--signing-key', empty], says: new RegExp(`^mercury: CONFIG_INVALID: --signing-key ${empty} is not a PEM private key: the file is empty; `), expects: privateKey },
      { args: ['--signing-key', text], says: new RegExp(`^mercury: CONFIG_INVALID: --signing-key ${text} is not a PEM private key: the file holds no PEM block; `), expects: privateKey },
      {
        args: ['--signing-key', good, '--previous-signing-key', text],
        says: new RegExp(`^mercury: CONFIG_INVALID: --previous-signing-key ${text} is not a PEM private key: the file holds no PEM block; `),
        expects: privateKey,
      },
      {
        args: ['--upstream', '127.0.0.1:1', '--trust-key', empty],
        says: new RegExp(`^mercury: CONFIG_INVALID: --trust-key ${empty} is not a PEM public key: the file is empty; `),
        expects: /give an Ed25519 public key in PEM, SPKI \(-----BEGIN PUBLIC KEY-----: the root's signing-key\.pub\.pem, or openssl pkey -pubout of its key\)$/m,
      },
    ];
    for (const [i, { args, says, expects }] of cases.entries()) {
      const refused = await serveRefused(join(filesDir, `bad-key-${i}`), args);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, says);
      assert.match(refused.stderr, expects);
      assert.doesNotMatch(refused.stderr, /DECODER/);
    }
  });

  // Found by an audit (2026-12-06): a token file of two lines was refused as "does not hold a token", which did not say
  // that the token was there, and only a line too many.
  test('cli: a token file of several lines exits 2 naming their count and line 1 as the token\'s place; the token is not shown', async () => {
    const token = TEST_TOKEN;
    const file = (name: string, text: string): string => secretFile(filesDir, name, text);
    const noteAfter = file('token-and-note', `${token}\nrotate in March\n`);
    const noteBefore = file('note-and-token', `# the CI token\r\n${token}\r\n`);
    const [after, before, replica] = await Promise.all([
      cli(['--token-file', noteAfter, 'status']),
      runCli(['--url', node.url, 'status'], { env: { MERCURY_TOKEN_FILE: noteBefore } }),
      runCli(['serve', '--data-dir', join(filesDir, 'two-line-token'), '--listen', '127.0.0.1:0', '--auth', 'off', '--upstream', node.replication, '--replication-token-file', noteAfter]),
    ]);
    assertFailed(after, 2, /^mercury: CONFIG_INVALID: --token-file \S+token-and-note has 2 lines; a token file holds the token alone, on line 1 \(\d+ characters, mcy_\.\.\..*\), and line 1 is a token: remove the lines after it$/m);
    assertFailed(before, 2, /^mercury: CONFIG_INVALID: \$MERCURY_TOKEN_FILE \S+note-and-token has 2 lines; .*on line 1 .*, and line 1 is not a token: put the token there, alone$/m);
    assertFailed(replica, 2, /^mercury: CONFIG_INVALID: --replication-token-file \S+token-and-note has 2 lines; .*line 1 is a token: remove the lines after it$/m);
    for (const result of [after, before, replica]) assert.doesNotMatch(result.stderr, /dddd|rotate in March|the CI token/);
    assert.equal(existsSync(join(filesDir, 'two-line-token')), false, 'no node started');
  });

  // Found by an audit (2026-12-07): an empty token file exited 2 without a code; one cut short (a copy interrupted) was
  // sent, and the node's 401 "malformed token" named no file.
  test('cli: a token file that is empty, cut short or not a token exits 2 with CONFIG_INVALID naming it, before any request', async () => {
    const token = TEST_TOKEN;
    const file = (name: string, text: string): string => secretFile(filesDir, name, text);
    const [empty, cut, other] = await Promise.all([
      cli(['--token-file', file('empty-token', '\n'), 'status']),
      cli(['--token-file', file('cut-token', token.slice(0, 30)), 'status']),
      runCli(['--url', node.url, 'status'], { env: { MERCURY_TOKEN_FILE: file('not-a-token', 'hunter2\n') } }),
    ]);
    assertFailed(empty, 2, /^mercury: CONFIG_INVALID: --token-file \S+empty-token is empty; put the token in it \(\d+ characters, mcy_/m);
    assertFailed(cut, 2, /^mercury: CONFIG_INVALID: --token-file \S+cut-token does not hold a token \(\d+ characters, mcy_/m);
    assertFailed(other, 2, /^mercury: CONFIG_INVALID: \$MERCURY_TOKEN_FILE \S+not-a-token does not hold a token/m);
    assert.doesNotMatch(other.stderr, /hunter2/, 'the file\'s text is not shown');
  });

  test('cli: serve with a replication token that is not a token exits 2 naming where it came from', async () => {
    // Found: a 300-byte token (junk appended) started, then crashed at its first connection (too long for HELLO's
    // credential field), and again at every restart. The upstream is a live node, so that a replica that did start
    // would connect at once.
    const longToken = join(filesDir, 'long-replication-token');
    writeFileSync(longToken, `mcy_${'a'.repeat(296)}\n`, { mode: 0o600 });
    const replicaArgs = (name: string) => ['serve', '--data-dir', join(filesDir, name), '--listen', '127.0.0.1:0', '--auth', 'off', '--upstream', node.replication];
    const [fromFile, fromEnv] = await Promise.all([
      runCli([...replicaArgs('long-token-file'), '--replication-token-file', longToken]),
      runCli(replicaArgs('long-token-env'), { env: { MERCURY_REPLICATION_TOKEN: `mcy_${'b'.repeat(296)}` } }),
    ]);
    assertFailed(fromFile, 2, /^mercury: CONFIG_INVALID: --replication-token-file \S+long-replication-token does not hold a token \(\d+ characters, mcy_/);
    assertFailed(fromEnv, 2, /^mercury: CONFIG_INVALID: \$MERCURY_REPLICATION_TOKEN does not hold a token \(\d+ characters, mcy_.*--scope replicate\)/);
  });

  // Found by an audit (2026-12-07, configuration): `--upstream 127.0.0.1:0` started a replica that tried to connect to
  // port 0, which no one can listen on, once a second for good.
  test('cli: serve with an upstream on port 0 exits 2 with CONFIG_INVALID naming it; nothing starts', async () => {
    const dir = join(filesDir, 'never-followed');
    const result = await serveRefused(dir, ['--upstream', '127.0.0.1:7071,127.0.0.1:0']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^mercury: CONFIG_INVALID: upstream \(--upstream\) port must be an integer from 1 to 65535, got 0$/m);
    assert.equal(existsSync(dir), false, 'no node started');
  });

  // Found by an audit (2026-12-07, configuration): two listeners given one address (`--replication-listen` the same as
  // `--listen`, or `--wire-listen` on the HTTP port + 1, the replication port's default) made the data directory, then
  // failed on the second listen as if another process held the port.
  test('cli: serve with two listeners on one address exits 2 with CONFIG_INVALID naming both flags; nothing is made', async () => {
    const dir = join(filesDir, 'never-listened');
    const [same, defaulted, everyAddress] = await Promise.all([
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:17080', '--replication-listen', '127.0.0.1:17080', '--auth', 'off']),
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:17080', '--wire-listen', '127.0.0.1:17081', '--auth', 'off']),
      runCli(['serve', '--data-dir', dir, '--listen', '127.0.0.1:17080', '--replication-listen', '0.0.0.0:17082', '--wire-listen', '127.0.0.1:17082', '--auth', 'off', '--insecure']),
    ]);
    assertFailed(same, 2, /^mercury: CONFIG_INVALID: --listen and --replication-listen both name port 17080 on 127\.0\.0\.1; give each listener its own port \(0: any free port\)$/m);
    assertFailed(defaulted, 2, /^mercury: CONFIG_INVALID: --replication-listen \(by default the HTTP port \+ 1\) and --wire-listen both name port 17081 on 127\.0\.0\.1; give each listener its own port/m);
    assertFailed(everyAddress, 2, /^mercury: CONFIG_INVALID: --replication-listen and --wire-listen both name port 17082 on 0\.0\.0\.0 and 127\.0\.0\.1; give each listener its own port/m);
    assert.equal(existsSync(dir), false, 'no data directory was made');
  });

  // Found by an audit (2026-12-07, configuration): a listen that failed printed Node's line alone, with no code and no
  // listener: `--listen 127.0.0.1:7069` said "listen EADDRINUSE: address already in use 127.0.0.1:7070", an address
  // the operator never typed (the replication port's default, the HTTP port + 1), and a host name that does not
  // resolve said "getaddrinfo ENOTFOUND name".
  test('cli: serve on a port in use, or a host that does not resolve, exits 1 with LISTEN_FAILED naming the listener and its flag; the next start works', async () => {
    const port = new URL(node.url).port;
    const dir = join(filesDir, 'second-node');
    const http = await runCli(['serve', '--data-dir', dir, '--listen', `127.0.0.1:${port}`]);
    assertFailed(http, 1, /^mercury: LISTEN_FAILED: the HTTP listener \(--listen\) cannot listen on 127\.0\.0\.1:\d+: the address is in use \(EADDRINUSE\); stop what listens there, or give --listen another HOST:PORT \(port 0: any free port\)$/m);
    // The replication port by default (the HTTP port + 1) taken: an HTTP port whose next one is in use.
    const [below, busy] = await portBelowBusyOne();
    const replication = await runCli(['serve', '--data-dir', dir, '--listen', `127.0.0.1:${below}`, '--wire-listen', '127.0.0.1:0', '--auth', 'off']);
    busy.close();
    assertFailed(replication, 1, /^mercury: LISTEN_FAILED: the replication listener \(--replication-listen; by default the HTTP port \+ 1\) cannot listen on 127\.0\.0\.1:\d+: the address is in use \(EADDRINUSE\); .*give --replication-listen another HOST:PORT/m);
    const unresolved = await runCli(['serve', '--data-dir', dir, '--listen', 'no-such-host.invalid:0', '--auth', 'off', '--insecure']);
    assertFailed(unresolved, 1, /^mercury: LISTEN_FAILED: the HTTP listener \(--listen\) cannot listen on no-such-host\.invalid:0: the host name does not resolve \(ENOTFOUND\)/m);
    // Nothing of the failed starts stands in the way: no lock, no listener, a directory the next start takes.
    const next = await startServe(dir);
    await stopProcess(next.child, 'SIGTERM');
  });

  test('cli: a node that cannot be reached exits 3 with one line', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const results = await Promise.all([['get', 'k'], ['put', 'k', 'v'], ['status'], ['ls']].map((args) => runCli(['--url', url, ...args])));
    for (const result of results) assertFailed(result, 3, /^mercury: cannot reach http:\/\/127\.0\.0\.1:\d+/);
  });

  test('cli: serve stops cleanly on SIGTERM, and its data is there on the next start', async () => {
    const { seq } = JSON.parse(assertOk(await cli(['status', '--json']))) as { seq: number };
    await stopProcess(node.child, 'SIGTERM');
    assert.equal(await node.exited, 0);
    node = await startServe(dataDir);
    assert.equal((JSON.parse(assertOk(await cli(['status', '--json']))) as { seq: number }).seq, seq);
    assert.equal((await cli(['get', 'app/name'])).stdout.toString(), 'mercury ✓');
  });
});
