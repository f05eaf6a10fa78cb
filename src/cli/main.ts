#!/usr/bin/env node
/**
 * The `mercury` command line: `serve` runs a node; the other commands are clients of a node's HTTP API.
 * Output is for people by default and JSON with `--json`. Errors print one line to stderr and exit non-zero:
 * 1 for an error the node reported, 2 for bad usage, 3 when the node cannot be reached. Never a stack trace: an
 * answer that is not Mercury's JSON (a proxy's page, a wrong shape) is one line naming the command and the URL, and
 * every line passes terminalSafe (src/cli/output.ts), so what a node sends cannot drive the terminal.
 */
import { createSecureContext } from 'node:tls';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ClientOptionsError, NodeClient, UnavailableError, WatchError, bearer, isHeaderToken, validateNodeUrl, type ClientTls } from '../client/index.js';
import { DEFAULT_PORT, parseHostPort, validateConfig } from '../config/index.js';
import { parseToken, readTokenFile, TOKEN_CHARS } from '../auth/index.js';
import { isWatchHash, parseBoundedJson, txnJsonLimits, WATCH_HASH_HEX_CHARS } from '../api/index.js';
import { TIMER_DELAY_MS_MAX } from '../clock/index.js';
import { MercuryError } from '../errors/index.js';
import { readFileBounded, SMALL_FILE_BYTES_MAX, type SecretFileWarn } from '../fs/bounded-read.js';
import { JSON_BODY_BYTES_MAX, VALUE_BYTES_CEILING } from '../limits.js';
import { checkCaBundle, credentialsError, isLoopbackHost, type NamedFile } from '../net/tls.js';
import { budgetedLogger, jsonLogger, StderrLines } from '../logging/index.js';
import { DEMO_REPLICAS_MAX, demoCommand } from './demo.js';
import { logLines } from './log.js';
import { AnswerShapeError, formatBytes, printResult, showBytes, terminalSafe } from './output.js';
import { snapshotInspect, snapshotRestore, snapshotSave } from './snapshot.js';
import { resyncCommand } from './resync.js';
import { statusLines } from './status.js';
import { syncCommand } from './sync.js';
import { verifyCommand } from './verify.js';
import { TokenPruneError, TokenUsageError, tokenCommand } from './token.js';
import { watchCommand } from './watch.js';

const USAGE = `usage: mercury <command> [options]

Node:
  serve [--data-dir DIR] [--listen HOST:PORT] [--max-value-bytes N] [--json]
        [--log-retain-entries N] [--log-retain-bytes N]      run a node (defaults: ./data, 127.0.0.1:${DEFAULT_PORT})
        [--max-connections-per-address N]                    HTTP connections one address may hold (default 4000)
        [--replication-listen HOST:PORT]                     where children connect (default: HTTP port + 1)
        [--wire-listen HOST:PORT]                            binary get/put/delete for mercury+tcp:// clients
                                                             (default: HTTP port + 2; mercury+tls:// with TLS)
        [--upstream HOST:PORT[,HOST:PORT...]] [--resync]     run as a replica of these upstreams, in order
        [--tls-cert F --tls-key F --tls-ca F]                TLS on HTTP, wss and (mutual) replication; the files
                                                             reload when they change and on SIGHUP
        [--insecure]                                         allow a non-loopback listen address without TLS and
                                                             authentication
        [--advertise-url URL]                                where other nodes reach this one (children forward
                                                             writes there; needed with --listen 0.0.0.0:PORT)
        [--allowed-hosts NAME[,NAME...]]                     Host names answered besides IPs, localhost and the node's
                                                             own names (.example.com: any name under it; *: any)
        [--allowed-origins ORIGIN[,ORIGIN...]]               web origins whose pages may use the API and watches
        [--ready-max-lag-ms N]                               a replica further behind is not ready (default 5000)
        [--auth required|off]                                check tokens on every request (default: required)
        [--admin-token-file F]                               a root's first admin token (default: a new one,
                                                             written to DIR/admin-token)
        [--replication-token-file F]                         a replica's token for its upstreams (scope replicate;
                                                             or $MERCURY_REPLICATION_TOKEN)
        [--signing-key FILE] [--previous-signing-key FILE]   root: sign with this key (default: generated into the
                                                             data directory); rotate from the previous one
        [--unsigned]                                         root: do not sign (to measure what signing costs)
        [--trust-key FILE]...                                replica: accept only data signed by these keys
        [--root-url URL]                                     replica: forward writes there; root: tell replicas so
  demo [--replicas N] [--dir DIR] [--json]                   a local root and N replicas in a tree (default 6)
  verify --data-dir DIR [--json]                             check a data directory offline (chain, key checksums,
                                                             keys against the log); exit 1 on damage
  snapshot restore FILE --data-dir DIR [--force]             make a data directory (a new root or replica) from a
           [--to-seq SEQ --url URL]                          snapshot file; --to-seq replays the node's log past it
  snapshot inspect FILE                                      check a snapshot file; its seq, hash, dataset, keys, bytes

Client (against --url, default $MERCURY_URL or http://127.0.0.1:${DEFAULT_PORT}):
  get KEY                         print a value
  put KEY [VALUE] [--file F]      set a value (from the argument, a file, or stdin) [--if-mod-seq N]
  del KEY [--prefix]              delete a key, or every key under a prefix [--if-mod-seq N]
  ls [PREFIX] [--limit N]         list keys under a prefix
  txn [--file F]                  run a JSON transaction (from a file or stdin)
  log [--from SEQ] [--limit N]    show log entries with their hashes
  status                          show the node's status and its place in the replication tree
  resync [--wait]                 make a replica drop its chain and take a full snapshot (after a divergence);
                                  --wait follows it to the end with a progress bar
         [--wait-timeout-ms N]    --wait gives up (RESYNC_STALLED) after N ms without progress (default 300000)
  watch PREFIX [--from SEQ]       print every change under PREFIX ('' for all keys) until Ctrl-C
        [--after-hash HASH]       with --from: the hash of entry SEQ-1 (a --json line's "hash"); a node on another
                                  chain there resets the watch instead of sending that chain's changes
  snapshot save FILE              save a consistent, checksummed snapshot of the node's keys to FILE; a busy
                                  node (503 OVERLOADED: its snapshot readers all in use) is asked again after its
       [--wait-timeout-ms N]      Retry-After, until N ms have passed (default 300000; 0: do not wait)
  token create NAME --scope S...  create a token (admin) and print its secret, once; scopes: read:PREFIX,
        [--subject CN]            write:PREFIX, replicate, admin; --subject: a grant to a client certificate instead
        [--expires-in DURATION]   it authenticates nothing after DURATION: 90s, 30m, 12h, 30d (1s to 3650d);
                                  without it, it never expires
  token list                      list tokens: id, name, scopes (never a secret)
  token revoke ID                 revoke a token: requests, watches and replicas using it stop at once
  token prune                     revoke every token that has expired (their records stay until revoked)
  sync PREFIX DIR [--exec CMD]    keep DIR in step with the keys under PREFIX (one file per key) until Ctrl-C
                                  (--url U1,U2,...: the watch fails over between them);
       [--exec-debounce-ms N]     CMD runs after changes, once they are quiet for N ms (default 200)
       [--max-files N]            DIR holds at most N files (default 100000)
       [--max-bytes N]            and N bytes, paths included (default 1073741824); sync stops before a write past them

Options: --json (machine-readable output), --url URL, --help; an option a command does not take is refused, and so
  is an argument past those it takes (quote a value that holds spaces)
TLS (https:// URLs): --ca F (the cluster CA; $MERCURY_CA), --cert F --key F (a client certificate; $MERCURY_CERT,
  $MERCURY_KEY)

Token: --token T, --token-file F, else $MERCURY_TOKEN, else $MERCURY_TOKEN_FILE`;

const OPTIONS = {
  json: { type: 'boolean' },
  url: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  'data-dir': { type: 'string' },
  listen: { type: 'string' },
  'max-value-bytes': { type: 'string' },
  'log-retain-entries': { type: 'string' },
  'log-retain-bytes': { type: 'string' },
  'max-connections-per-address': { type: 'string' },
  'replication-listen': { type: 'string' },
  'wire-listen': { type: 'string' },
  upstream: { type: 'string' },
  resync: { type: 'boolean' },
  'advertise-url': { type: 'string' },
  'allowed-hosts': { type: 'string' },
  'allowed-origins': { type: 'string' },
  'ready-max-lag-ms': { type: 'string' },
  'signing-key': { type: 'string' },
  unsigned: { type: 'boolean' },
  'previous-signing-key': { type: 'string' },
  'trust-key': { type: 'string', multiple: true },
  'root-url': { type: 'string' },
  replicas: { type: 'string' },
  dir: { type: 'string' },
  file: { type: 'string', short: 'f' },
  prefix: { type: 'boolean' },
  'if-mod-seq': { type: 'string' },
  limit: { type: 'string' },
  from: { type: 'string' },
  'after-hash': { type: 'string' },
  force: { type: 'boolean' },
  'to-seq': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  insecure: { type: 'boolean' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  auth: { type: 'string' },
  'admin-token-file': { type: 'string' },
  'replication-token-file': { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  scope: { type: 'string', multiple: true },
  subject: { type: 'string' },
  'expires-in': { type: 'string' },
  exec: { type: 'string' },
  wait: { type: 'boolean' },
  'wait-timeout-ms': { type: 'string' },
  'exec-debounce-ms': { type: 'string' },
  'max-files': { type: 'string' },
  'max-bytes': { type: 'string' },
} satisfies ParseArgsConfig['options'];

class UsageError extends Error {}

/**
 * parseArgs keeps the last of an option given twice: `--listen A --listen B` listened on B, and `--upstream A
 * --upstream B` would follow B alone. An option that takes one value may be given once (`--trust-key` and `--scope`
 * repeat by design; a repeated switch says the same thing twice).
 */
function refuseRepeatedOptions(tokens: ReturnType<typeof parseArgs>['tokens']): void {
  const seen = new Set<string>();
  for (const token of tokens ?? []) {
    if (token.kind !== 'option') continue;
    const option: { type: string; multiple?: boolean } = OPTIONS[token.name as keyof typeof OPTIONS];
    if (option.type !== 'string' || option.multiple === true) continue;
    if (seen.has(token.name)) throw new UsageError(`--${token.name} is given twice; give it once (a list option takes commas: --upstream A,B)`);
    seen.add(token.name);
  }
}

/** The options a client command reads besides its own: where the node is, and the credentials. */
const CLIENT_OPTIONS = ['url', 'ca', 'cert', 'key', 'token', 'token-file'] as const;

/**
 * The options each command reads (`--json` and `--help` go with all). Before (stop 37's list), an option a command
 * does not read was ignored without a word: `mercury get a --data-dir ./other` read the default node, and a `--scope`
 * given to `token list` looked like a filter. Keys are "command" or "command subcommand".
 */
const COMMAND_OPTIONS: Readonly<Record<string, readonly (keyof typeof OPTIONS)[]>> = {
  serve: [
    'data-dir', 'listen', 'max-value-bytes', 'log-retain-entries', 'log-retain-bytes', 'max-connections-per-address', 'replication-listen',
    'wire-listen', 'upstream', 'resync', 'advertise-url', 'allowed-hosts', 'allowed-origins', 'ready-max-lag-ms', 'signing-key', 'unsigned',
    'previous-signing-key', 'trust-key', 'root-url', 'tls-cert', 'tls-key', 'tls-ca', 'insecure', 'auth', 'admin-token-file', 'replication-token-file',
  ],
  demo: ['replicas', 'dir'],
  verify: ['data-dir'],
  'snapshot save': [...CLIENT_OPTIONS, 'wait-timeout-ms'],
  'snapshot restore': [...CLIENT_OPTIONS, 'data-dir', 'force', 'to-seq'],
  'snapshot inspect': [],
  get: CLIENT_OPTIONS,
  put: [...CLIENT_OPTIONS, 'file', 'if-mod-seq'],
  del: [...CLIENT_OPTIONS, 'prefix', 'if-mod-seq'],
  ls: [...CLIENT_OPTIONS, 'limit'],
  txn: [...CLIENT_OPTIONS, 'file'],
  log: [...CLIENT_OPTIONS, 'from', 'limit'],
  status: CLIENT_OPTIONS,
  resync: [...CLIENT_OPTIONS, 'wait', 'wait-timeout-ms'],
  watch: [...CLIENT_OPTIONS, 'from', 'after-hash'],
  'token create': [...CLIENT_OPTIONS, 'scope', 'subject', 'expires-in'],
  'token list': CLIENT_OPTIONS,
  'token revoke': CLIENT_OPTIONS,
  'token prune': CLIENT_OPTIONS,
  sync: [...CLIENT_OPTIONS, 'exec', 'exec-debounce-ms', 'max-files', 'max-bytes'],
};

/** Refuses an option that `command` would not read (an unknown command is left to its own error). */
function refuseUnusedOptions(command: string, subcommand: string | undefined, tokens: ReturnType<typeof parseArgs>['tokens']): void {
  const name = command === 'snapshot' || command === 'token' ? `${command} ${subcommand ?? ''}` : command;
  const allowed = COMMAND_OPTIONS[name];
  if (allowed === undefined) return;
  for (const token of tokens ?? []) {
    if (token.kind !== 'option' || token.name === 'json' || token.name === 'help') continue;
    if (!(allowed as readonly string[]).includes(token.name))
      throw new UsageError(`${name} does not take --${token.name}${allowed.length === 0 ? '' : ` (it takes ${allowed.map((option) => `--${option}`).join(', ')})`}; see mercury --help`);
  }
}

/**
 * The arguments each command takes after its name (and after the action of `snapshot` and `token`), as --help names
 * them. One past them was dropped without a word: `put greeting hello world` (the value unquoted) stored "hello",
 * `del a b` deleted a alone, and `serve /var/lib/mercury` served ./data (audit, 2026-12-07). `help` takes anything.
 */
const COMMAND_ARGUMENTS: Readonly<Record<string, { readonly names: string; readonly count: number; readonly hint?: string }>> = {
  serve: { names: '', count: 0, hint: 'give the data directory with --data-dir DIR' },
  demo: { names: '', count: 0, hint: 'give its directory with --dir DIR' },
  verify: { names: '', count: 0, hint: 'give the data directory with --data-dir DIR' },
  'snapshot save': { names: 'FILE', count: 1 },
  'snapshot restore': { names: 'FILE', count: 1 },
  'snapshot inspect': { names: 'FILE', count: 1 },
  get: { names: 'KEY', count: 1 },
  put: { names: 'KEY [VALUE]', count: 2, hint: "quote a value that holds spaces (put KEY 'a value')" },
  del: { names: 'KEY', count: 1, hint: 'delete one key at a time, or every key under a prefix with --prefix' },
  ls: { names: '[PREFIX]', count: 1 },
  txn: { names: '', count: 0, hint: 'give the transaction with --file F or on standard input' },
  log: { names: '', count: 0 },
  status: { names: '', count: 0 },
  resync: { names: '', count: 0 },
  watch: { names: 'PREFIX', count: 1 },
  'token create': { names: 'NAME', count: 1 },
  'token list': { names: '', count: 0 },
  'token revoke': { names: 'ID', count: 1 },
  'token prune': { names: '', count: 0 },
  sync: { names: 'PREFIX DIR', count: 2 },
};

/** Refuses an argument past those `command` takes (an unknown command or action is left to its own error). */
function refuseExtraArguments(command: string, args: readonly string[]): void {
  const hasAction = command === 'snapshot' || command === 'token';
  const name = hasAction ? `${command} ${args[0] ?? ''}` : command;
  const taken = COMMAND_ARGUMENTS[name];
  if (taken === undefined) return;
  const given = hasAction ? args.slice(1) : args;
  if (given.length <= taken.count) return;
  const extra = JSON.stringify(given[taken.count]!.slice(0, 200));
  const hint = taken.hint === undefined ? '' : `; ${taken.hint}`;
  throw new UsageError(
    taken.count === 0
      ? `${name} takes no argument, got ${extra}${hint}`
      : `${name} takes ${taken.names}, got ${given.length} arguments: ${extra} is past them${hint}`,
  );
}

function integerOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`--${name} must be a non-negative integer, got "${value}"`);
  // Past 2^53 a number is rounded: the message would quote another value than the one given.
  if (!Number.isSafeInteger(Number(value))) throw new UsageError(`--${name} must be at most ${Number.MAX_SAFE_INTEGER}, got "${value}"`);
  return Number(value);
}

/**
 * A count that bounds something (`sync --max-files`, `serve --log-retain-entries`), or a seq: at least 1, as nothing
 * fits in 0 and no entry has seq 0. ("must be a non-negative integer" was said of flags that then refused 0.)
 */
function limitOption(value: string | undefined, name: string): number | undefined {
  const count = integerOption(value, name);
  if (count === 0) throw new UsageError(`--${name} must be at least 1, got "${value}"`);
  return count;
}

/** A duration in ms that sets a timer: at most TIMER_DELAY_MS_MAX, the longest Node's timers take (src/clock/). */
function durationOption(value: string | undefined, name: string): number | undefined {
  const ms = integerOption(value, name);
  if (ms !== undefined && ms > TIMER_DELAY_MS_MAX) throw new UsageError(`--${name} must be at most ${TIMER_DELAY_MS_MAX} (24.8 days), got "${value}"`);
  return ms;
}

/**
 * `--after-hash HASH` of `mercury watch`: the hash of entry --from - 1, as a JSON line's `hash` gave it. Checked here so
 * that a mistyped one is a usage error (exit 2), as the client would refuse it anyway.
 */
function afterHashOption(value: string | undefined, from: string | undefined): { afterHash?: string } {
  if (value === undefined) return {};
  if (!isWatchHash(value)) throw new UsageError(`--after-hash must be an entry's hash, ${WATCH_HASH_HEX_CHARS} lowercase hex digits (the "hash" of a --json line), got ${JSON.stringify(value)}`);
  if (from === undefined || integerOption(from, 'from')! < 2)
    throw new UsageError('--after-hash is the hash of entry --from - 1: give it with --from SEQ+1, SEQ being the seq that printed the hash');
  return { afterHash: value };
}

/** A comma-separated list option; undefined when absent. */
function listOption(value: string | undefined): string[] | undefined {
  return value?.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
}

/**
 * A token from a file (whitespace around it ignored), for --token-file and $MERCURY_TOKEN_FILE: checked as a node checks
 * its token files (readTokenFile), CONFIG_INVALID naming the file. An empty file was a usage error without a code, and
 * one cut short or holding something else was sent, and refused by the node as a malformed token, naming no file
 * (audit, 2026-12-07).
 */
function readTokenText(path: string, flag: string): string {
  return readTokenFile(path, flag, warnLine);
}

/** A client command's warning (a secret file that lets others in, TLS or a token for a plaintext URL): one line on stderr. */
function warnLine(message: string): void {
  process.stderr.write(`mercury: warning: ${terminalSafe(message)}\n`);
}

/**
 * The token a replica presents in HELLO: --replication-token-file, else $MERCURY_REPLICATION_TOKEN. Checked here to be
 * a token, like --admin-token-file: anything else (a PEM, a token with junk appended) would only be refused by every
 * upstream, or be too long for HELLO at the first connection, and the operator should learn it at start, naming the
 * source.
 */
function replicationTokenOption(file: string | undefined, warn: SecretFileWarn): string | undefined {
  if (file !== undefined) return readTokenFile(file, '--replication-token-file', warn);
  const fromEnv = process.env.MERCURY_REPLICATION_TOKEN?.trim();
  if (fromEnv === undefined) return undefined;
  // Set but empty (`MERCURY_REPLICATION_TOKEN="$TOKEN"` with TOKEN unset) is refused like any other value that is not a
  // token, as the README says: the replica would otherwise start, and be refused by every upstream once a second.
  if (parseToken(fromEnv) === undefined)
    throw new MercuryError('CONFIG_INVALID', `$MERCURY_REPLICATION_TOKEN does not hold a token (${TOKEN_CHARS} characters, mcy_...; make one with mercury token create NAME --scope replicate)`);
  return fromEnv;
}

/**
 * The token client commands send: --token, --token-file, $MERCURY_TOKEN, $MERCURY_TOKEN_FILE, in that order (an
 * empty variable counts as unset; an empty flag is refused). It must fit an HTTP header: a control character, a
 * second line or a byte past ASCII failed as "cannot reach" the node (exit 3), naming the network for a bad token.
 */
function clientToken(values: { token?: string; 'token-file'?: string }): string | undefined {
  if (values.token !== undefined && values['token-file'] !== undefined) throw new UsageError('--token and --token-file say the same thing: give one of them');
  if (values.token !== undefined) return headerSafeToken(values.token.trim(), '--token');
  if (values['token-file'] !== undefined) return headerSafeToken(readTokenText(values['token-file'], '--token-file'), `--token-file ${values['token-file']}`);
  const fromEnv = process.env.MERCURY_TOKEN?.trim();
  if (fromEnv !== undefined && fromEnv.length > 0) return headerSafeToken(fromEnv, '$MERCURY_TOKEN');
  const file = process.env.MERCURY_TOKEN_FILE;
  return file === undefined || file === '' ? undefined : headerSafeToken(readTokenText(file, '$MERCURY_TOKEN_FILE'), `$MERCURY_TOKEN_FILE ${file}`);
}

/** `token` if it can go in an Authorization header (the client library's rule, isHeaderToken). */
function headerSafeToken(token: string, source: string): string {
  if (!isHeaderToken(token))
    throw new UsageError(`${source} does not hold a token: one line of printable characters without spaces, as mercury token create prints it (mcy_...)`);
  return token;
}

/**
 * The node URL of --url, else $MERCURY_URL (an empty variable counts as unset; an empty flag is refused), each checked
 * as the client library checks its urls: a URL with a path, credentials, another scheme or none was sent as it was and
 * failed as "cannot reach" (exit 3), or wrote another key than the one named (audit, stop 37). `sync` takes a
 * comma-separated list; other commands one URL.
 */
function urlOption(value: string | undefined, command: string): string | undefined {
  const source = value !== undefined ? '--url' : '$MERCURY_URL';
  const text = (value ?? process.env.MERCURY_URL)?.trim();
  if (text === undefined || (text === '' && value === undefined)) return undefined;
  const items = text.split(',').map((item) => item.trim());
  if (items.some((item) => item === '')) throw new UsageError(`${source} has an empty URL in "${text.slice(0, 200)}"; give a node's URL, like http://127.0.0.1:${DEFAULT_PORT}`);
  if (items.length > 1 && command !== 'sync') throw new UsageError(`${source} gives ${items.length} URLs; ${command} takes one (a list is for sync, which fails over between them)`);
  try {
    return items.map((item) => validateNodeUrl(item, source)).join(',');
  } catch (error) {
    if (error instanceof ClientOptionsError) throw new UsageError(error.message);
    throw error;
  }
}

/** What `put` and `txn` read from --file or stdin: at most `bytesMax` (no node takes more), never without end. */
async function readInput(file: string | undefined, bytesMax: number): Promise<Buffer> {
  if (file !== undefined) return readFileBounded(file, { what: '--file', bytesMax });
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > bytesMax) throw new UsageError(`standard input holds over ${bytesMax} bytes, more than any node accepts here; give a smaller value`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function serve(values: Record<string, string | boolean | string[] | undefined>): Promise<void> {
  const listen = values.listen === undefined ? undefined : parseHostPort(values.listen as string, '--listen');
  const replicationListen =
    values['replication-listen'] === undefined ? undefined : parseHostPort(values['replication-listen'] as string, '--replication-listen');
  const wireListen = values['wire-listen'] === undefined ? undefined : parseHostPort(values['wire-listen'] as string, '--wire-listen');
  const upstream = values.upstream as string | undefined;
  const config = validateConfig({
    replicationHost: replicationListen?.host,
    replicationPort: replicationListen?.port,
    wireHost: wireListen?.host,
    wirePort: wireListen?.port,
    // Every item is checked, empty ones too: `--upstream "$UPSTREAM"` with the variable unset must not start a root.
    upstreams: upstream === undefined ? undefined : upstream.split(',').map((address) => address.trim()),
    resync: values.resync as boolean | undefined,
    dataDir: values['data-dir'] as string | undefined,
    host: listen?.host,
    port: listen?.port,
    valueBytesMax: limitOption(values['max-value-bytes'] as string | undefined, 'max-value-bytes'),
    logRetainEntries: limitOption(values['log-retain-entries'] as string | undefined, 'log-retain-entries'),
    logRetainBytes: limitOption(values['log-retain-bytes'] as string | undefined, 'log-retain-bytes'),
    connectionsPerAddressMax: limitOption(values['max-connections-per-address'] as string | undefined, 'max-connections-per-address'),
    tls: tlsFlags(values),
    insecure: values.insecure as boolean | undefined,
    advertiseUrl: values['advertise-url'] as string | undefined,
    allowedHosts: listOption(values['allowed-hosts'] as string | undefined),
    allowedOrigins: listOption(values['allowed-origins'] as string | undefined),
    readyLagMsMax: integerOption(values['ready-max-lag-ms'] as string | undefined, 'ready-max-lag-ms'),
    signingKeyFile: values['signing-key'] as string | undefined,
    signing: values.unsigned === true ? false : undefined,
    previousSigningKeyFile: values['previous-signing-key'] as string | undefined,
    trustKeyFiles: values['trust-key'] as string[] | undefined,
    rootUrl: values['root-url'] as string | undefined,
  });
  const auth = (values.auth as string | undefined) ?? 'required';
  if (auth !== 'required' && auth !== 'off') throw new UsageError(`--auth must be required or off, got "${auth}"`);
  // A root has no upstream to present it to: the flag was meant for a replica whose --upstream is missing (as
  // --trust-key without --upstream is refused).
  if (values['replication-token-file'] !== undefined && config.upstreams.length === 0)
    throw new MercuryError('CONFIG_INVALID', '--replication-token-file needs --upstream: only a replica presents a replication token');
  // The other way round: a replica never registers a token (its tokens come from the root's log), so the flag was
  // ignored without a word, and its holder may have believed the replica would accept it (audit, 2026-12-06).
  if (values['admin-token-file'] !== undefined && config.upstreams.length > 0)
    throw new MercuryError('CONFIG_INVALID', '--admin-token-file is for a root: a replica takes its tokens from its root; give the file to the root, or make the token there (mercury token create NAME --scope admin)');
  // The log is often a file on the data directory's disk: a line that a full disk (or a closed pipe) refuses is lost,
  // and the node goes on. Without a listener, stderr's error event ended the process at its first refused line, with
  // exit 1 and nothing said (audit, 2026-12-07: a root whose log was on its full tmpfs died at its 14th refused write).
  // The lines lost so are counted (StderrLines) for /metrics.
  process.stderr.on('error', () => {});
  const stderrLines = new StderrLines();
  const logger = budgetedLogger(jsonLogger(stderrLines.write));
  const replicationToken = replicationTokenOption(values['replication-token-file'] as string | undefined, (message, fields) => logger.log('warn', message, fields));
  // Loaded here, not at the top: the node pulls in LMDB, the HTTP server and replication, which would double the start-up time
  // of every client command.
  const { MercuryNode } = await import('../node/index.js');
  const node = await MercuryNode.start(config, {
    logger,
    auth,
    adminTokenFile: values['admin-token-file'] as string | undefined,
    replicationToken,
    logLinesLost: () => stderrLines.lost,
  });
  const json = values.json === true;
  const advertised = node.advertisedUrl === node.url ? {} : { advertisedUrl: node.advertisedUrl };
  printResult(json, { event: 'listening', url: node.url, replication: node.replicationAddress, wire: node.wireUrl, role: node.role, dataDir: config.dataDir, seq: node.store.head().seq, auth: node.authMode, ...advertised }, () =>
    `mercury node listening on ${node.url} replication ${node.replicationAddress} wire ${node.wireUrl} (${node.role}, data: ${config.dataDir}, seq ${node.store.head().seq}, auth ${node.authMode}` +
      `${node.advertisedUrl === node.url ? '' : `, advertised as ${node.advertisedUrl}`})`,
  );
  // Whoever started the node may be gone (a closed pipe): that must not turn a clean stop into a crash.
  process.stdout.on('error', () => {});
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    printResult(json, { event: 'stopping', signal }, () => `received ${signal}, stopping`);
    node.close().then(
      () => process.exit(0),
      (error: unknown) => {
        // With its code, as every other refusal: a full disk at the last write said only "MercuryError: ...".
        process.stderr.write(`error while stopping: ${error instanceof MercuryError ? `${error.code}: ${error.message}` : String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // The operator rotated the certificate: read the files now rather than at the next poll. Connections stay open.
  process.on('SIGHUP', () => {
    if (config.tls === undefined) process.stdout.write('received SIGHUP: no TLS files to reload\n');
    else process.stdout.write(`received SIGHUP: ${node.reloadTls('SIGHUP') ? 'TLS files reloaded' : 'TLS reload failed, previous certificate kept (see the log)'}\n`);
  });
}

/** `--tls-cert`, `--tls-key`, `--tls-ca`: undefined when none is given (the config checks that all three are). */
function tlsFlags(values: Record<string, string | boolean | string[] | undefined>): { certPath: string; keyPath: string; caPath: string } | undefined {
  const [certPath, keyPath, caPath] = [values['tls-cert'], values['tls-key'], values['tls-ca']] as (string | undefined)[];
  if (certPath === undefined && keyPath === undefined && caPath === undefined) return undefined;
  return { certPath: certPath ?? '', keyPath: keyPath ?? '', caPath: caPath ?? '' };
}

/** The client's TLS files: `--ca`, `--cert`, `--key`, else $MERCURY_CA, $MERCURY_CERT, $MERCURY_KEY. */
function clientTls(values: Record<string, string | boolean | string[] | undefined>): ClientTls | undefined {
  const file = (flag: string, variable: string): NamedFile | undefined => {
    const given = values[flag] as string | undefined;
    // An empty flag is a mistake (a variable unset in the shell): without --ca the system's CAs would be trusted.
    if (given !== undefined && given.trim() === '') throw new UsageError(`--${flag} is empty; give a file, or leave the option out`);
    const path = given ?? process.env[variable];
    if (path === undefined || path === '') return undefined;
    const what = `--${flag} (or $${variable})`;
    const bytes = readFileBounded(path, { what, bytesMax: SMALL_FILE_BYTES_MAX, secret: flag === 'key' ? warnLine : undefined });
    // A CA bundle cut short would be taken as the CAs before the cut, silently (as a node's --tls-ca would).
    if (flag === 'ca') checkCaBundle(what, path, bytes);
    return { what, path, bytes };
  };
  const ca = file('ca', 'MERCURY_CA');
  const cert = file('cert', 'MERCURY_CERT');
  const key = file('key', 'MERCURY_KEY');
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('--cert and --key go together (or $MERCURY_CERT and $MERCURY_KEY)');
  if (cert !== undefined && key !== undefined) {
    // Checked here, so that a key that does not go with its certificate, or a file that is not PEM, is named as such
    // (exit 2) rather than failing the connection as "cannot reach" the node (exit 3).
    try {
      createSecureContext({ cert: cert.bytes, key: key.bytes });
    } catch (error) {
      throw credentialsError(cert, key, error as Error);
    }
  }
  const tls = { ca: ca?.bytes, cert: cert?.bytes, key: key?.bytes };
  return tls.ca === undefined && tls.cert === undefined ? undefined : tls;
}

/**
 * A client given TLS files or a token for a plaintext URL: TLS files would be ignored and a token sent in clear, where
 * the user meant TLS (an `http://` left in a script or in $MERCURY_URL). Flags are refused (exit 2); the environment's
 * variables, often set for a whole shell, get a warning on stderr; so does a token sent over `http://` to another host
 * (a node that listens so was started with `--insecure`). Loopback is plaintext by design.
 */
function checkPlaintext(values: Record<string, string | boolean | string[] | undefined>, urls: string, token: string | undefined): void {
  const all = urls.split(',');
  const plaintext = all.filter((url) => url.startsWith('http:'));
  if (plaintext.length === 0) return;
  const allPlaintext = plaintext.length === all.length;
  // An empty flag is left to clientTls, which names it as empty.
  const flags = ['ca', 'cert', 'key'].filter((flag) => ((values[flag] as string | undefined) ?? '').trim() !== '').map((flag) => `--${flag}`);
  if (allPlaintext && flags.length > 0)
    throw new UsageError(`${flags.join(' and ')} ${flags.length > 1 ? 'are' : 'is'} for https:// URLs, and ${plaintext[0]} is plaintext, so TLS would not be used; give the node's https:// URL`);
  const variables = ['MERCURY_CA', 'MERCURY_CERT', 'MERCURY_KEY'].some((name) => (process.env[name] ?? '') !== '');
  if (allPlaintext && variables) warnLine(`$MERCURY_CA, $MERCURY_CERT and $MERCURY_KEY are not used for the plaintext URL ${plaintext[0]}; give an https:// URL to use TLS`);
  const remote = plaintext.find((url) => !isLoopbackHost(new URL(url).hostname));
  if (token !== undefined && remote !== undefined) warnLine(`the token is sent in clear to ${remote}; use the node's https:// URL`);
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals, tokens } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  refuseRepeatedOptions(tokens);
  const [command, ...args] = positionals;
  if (values.help || command === undefined || command === 'help') {
    printResult(values.json ?? false, { usage: USAGE }, () => USAGE);
    return;
  }
  refuseUnusedOptions(command, args[0], tokens);
  refuseExtraArguments(command, args);
  if (command === 'serve') return serve(values);
  if (command === 'verify') {
    if (values['data-dir'] === undefined) throw new UsageError('verify needs --data-dir DIR');
    process.exitCode = await verifyCommand(values['data-dir'], values.json ?? false);
    return;
  }
  if (command === 'demo') {
    const replicas = integerOption(values.replicas, 'replicas') ?? 6;
    if (replicas < 1 || replicas > DEMO_REPLICAS_MAX) throw new UsageError(`--replicas must be from 1 to ${DEMO_REPLICAS_MAX}`);
    return demoCommand((values.dir) ?? './data/demo', replicas, values.json ?? false);
  }
  const json = values.json ?? false;
  // `snapshot inspect` reads a file and asks no node: a bad $MERCURY_CA or token file is none of its business.
  if (command === 'snapshot' && args[0] === 'inspect') {
    if (args[1] === undefined || args[1] === '') throw new UsageError('snapshot inspect needs a FILE');
    return snapshotInspect(args[1], json);
  }
  const url = urlOption(values.url, command);
  const token = clientToken(values);
  checkPlaintext(values, url ?? `http://127.0.0.1:${DEFAULT_PORT}`, token);
  const tls = clientTls(values);
  const client = new NodeClient(url ?? `http://127.0.0.1:${DEFAULT_PORT}`, undefined, tls, token === undefined ? undefined : bearer(token));
  if (command === 'snapshot') {
    const [action, file] = args;
    if (file === undefined || file === '') throw new UsageError(`snapshot ${action ?? 'save|restore|inspect'} needs a FILE`);
    if (action === 'save') return snapshotSave(client, file, { json, waitMs: durationOption(values['wait-timeout-ms'], 'wait-timeout-ms') });
    if (action === 'restore') {
      if (values['data-dir'] === undefined) throw new UsageError('snapshot restore needs --data-dir DIR');
      const toSeq = integerOption(values['to-seq'], 'to-seq');
      return snapshotRestore(file, { dataDir: values['data-dir'], force: values.force ?? false, toSeq, client: url === undefined ? undefined : client, json });
    }
    throw new UsageError(`unknown snapshot action "${action}"; use save, restore or inspect`);
  }
  try {
    await clientCommand(command, args, values, { client, url, json, tls, token });
  } catch (error) {
    throw answerFailure(error, { command, url: client.baseUrl });
  }
}

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>['values'];

/** The commands that ask a node (all but serve, verify, demo and snapshot). */
async function clientCommand(
  command: string,
  args: readonly string[],
  values: Values,
  { client, url, json, tls, token }: { client: NodeClient; url: string | undefined; json: boolean; tls: ClientTls | undefined; token: string | undefined },
): Promise<void> {
  const ifModSeq = integerOption(values['if-mod-seq'], 'if-mod-seq');
  const needKey = (): string => {
    if (args[0] === undefined || args[0] === '') throw new UsageError(`${command} needs a KEY`);
    return args[0];
  };
  switch (command) {
    case 'get': {
      const found = await client.get(needKey());
      if (found === undefined) throw new MercuryError('KEY_NOT_FOUND', `key "${args[0]}" does not exist`);
      if (json) printResult(true, { key: args[0], value: found.value.toString('base64'), seq: found.seq, modSeq: found.modSeq, version: found.version, createSeq: found.createSeq }, () => '');
      else process.stdout.write(found.value);
      if (!json && process.stdout.isTTY) process.stdout.write('\n');
      return;
    }
    case 'put': {
      const key = needKey();
      if (args[1] !== undefined && values.file !== undefined) throw new UsageError('put takes its value from VALUE or from --file, not both');
      const value = args[1] !== undefined ? Buffer.from(args[1], 'utf8') : await readInput(values.file, VALUE_BYTES_CEILING);
      const result = await client.put(key, value, { ifModSeq });
      printResult(json, result, () => `OK seq ${result.seq}`);
      return;
    }
    case 'del': {
      const key = needKey();
      if (values.prefix) {
        // A prefix delete has no condition: dropping the one given would delete every key under KEY unconditionally.
        if (ifModSeq !== undefined) throw new UsageError('del --prefix takes no --if-mod-seq: a prefix delete is unconditional (use mercury txn for a conditional one)');
        const result = await client.deletePrefix(key);
        printResult(json, result, () => `OK seq ${result.seq}`);
      } else {
        const result = await client.delete(key, { ifModSeq });
        printResult(json, result, () => (result.deleted ? `deleted, seq ${result.seq}` : `no such key, seq ${result.seq}`));
      }
      return;
    }
    case 'ls': {
      // At least 1, as `log --limit`: a listing of no keys that exits 0 says nothing the operator meant to ask.
      const limit = limitOption(values.limit, 'limit');
      let count = 0;
      for await (const item of client.range(args[0] ?? '')) {
        if (limit !== undefined && count >= limit) break;
        count++;
        // The key as `mercury watch` shows it: a name holding control characters or spaces as a JSON string.
        printResult(json, { key: item.key.toString(), value: item.value.toString('base64'), modSeq: item.modSeq, version: item.version }, () =>
          `${showBytes(item.key)}\t${formatBytes(item.value.length)}\tmodSeq ${item.modSeq}\tversion ${item.version}`,
        );
      }
      return;
    }
    case 'txn': {
      // Read by the node's own rules (src/api/json-validator.ts): JSON.parse alone would keep the last of a member name
      // given twice and turn bytes that are not UTF-8 into U+FFFD, and send the node another transaction than the file's.
      const text = await readInput(values.file, JSON_BODY_BYTES_MAX);
      let body: unknown;
      try {
        body = parseBoundedJson(text, txnJsonLimits(VALUE_BYTES_CEILING));
      } catch (error) {
        if (!(error instanceof MercuryError)) throw error;
        throw new UsageError(`transaction is not valid JSON (${error.code}): ${error.message}`);
      }
      const result = await client.txn(body as Record<string, never>);
      printResult(json, result, () => `${result.succeeded ? 'succeeded' : 'compare failed, failure branch applied'}, seq ${result.seq}`);
      return;
    }
    case 'log': {
      // Seqs start at 1, and a page holds at least one entry: 0 was sent, and the node's 400 came back as exit 1.
      const result = await client.log(limitOption(values.from, 'from'), limitOption(values.limit, 'limit'));
      // Checked with --json too: a script should not be handed a page that is not the log.
      const lines = logLines(result);
      printResult(json, result, () => lines);
      return;
    }
    case 'status': {
      const status = await client.status();
      const lines = statusLines(status);
      printResult(json, status, () => lines.join('\n'));
      return;
    }
    case 'resync':
      return resyncCommand(client, { json, wait: values.wait ?? false, waitTimeoutMs: durationOption(values['wait-timeout-ms'], 'wait-timeout-ms') });
    case 'sync':
      if (args[0] === undefined || args[1] === undefined || args[1] === '') throw new UsageError("sync needs a PREFIX ('' for every key) and a DIR");
      // Several URLs (comma-separated): the watch fails over between them, resuming where it was.
      return syncCommand((url ?? client.baseUrl).split(','), args[0], args[1], {
        exec: values.exec,
        execDebounceMs: durationOption(values['exec-debounce-ms'], 'exec-debounce-ms'),
        filesMax: limitOption(values['max-files'], 'max-files'),
        bytesMax: limitOption(values['max-bytes'], 'max-bytes'),
        json,
        tls,
        token,
      });
    case 'watch':
      if (args[0] === undefined) throw new UsageError("watch needs a PREFIX ('' watches every key)");
      return watchCommand(client.baseUrl, args[0], { fromSeq: limitOption(values.from, 'from'), ...afterHashOption(values['after-hash'], values.from), json, tls, token });
    case 'token':
      return tokenCommand(client, args, { scopes: values.scope ?? [], subject: values.subject, expiresIn: values['expires-in'] }, json);
    default:
      throw new UsageError(`unknown command "${command}"; run mercury --help`);
  }
}

/** Errors are one line, so scripts can show or match them (parseArgs' messages span several). */
function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

/** Errors whose own line says what happened; anything else a client command throws came of the node's answer. */
function isKnownFailure(error: unknown): boolean {
  const system = error as NodeJS.ErrnoException | undefined;
  return (
    error instanceof UsageError ||
    error instanceof TokenUsageError ||
    error instanceof TokenPruneError ||
    error instanceof UnavailableError ||
    error instanceof MercuryError ||
    error instanceof WatchError ||
    (typeof system?.code === 'string' && (typeof system.syscall === 'string' || system.code.startsWith('ERR_PARSE_ARGS')))
  );
}

/**
 * A failure of a client command as the operator should read it. A SyntaxError, TypeError or RangeError there comes of
 * an answer that is not Mercury's JSON (the client parses and reads it): one line naming the command and the URL,
 * where a stack trace would name only the CLI's own files.
 */
function answerFailure(error: unknown, where: { command: string; url: string }): unknown {
  if (isKnownFailure(error)) return error;
  const detail = error instanceof AnswerShapeError ? error.detail : error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new AnswerShapeError(detail, where, { cause: error });
}

/** What a failed command reports: the exit code and one line (the stable code first, where there is one). */
function failure(error: unknown): { exitCode: number; message: string } {
  const code: unknown = (error as { code?: unknown } | undefined)?.code;
  if (error instanceof UsageError || error instanceof TokenUsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')))
    return { exitCode: 2, message: oneLine((error as Error).message) };
  if (error instanceof UnavailableError) return { exitCode: 3, message: oneLine(error.message) };
  if (error instanceof AnswerShapeError) return { exitCode: 1, message: oneLine(error.message) };
  // A bad option value for `serve` (--listen, --max-value-bytes, ...) is bad usage, not an error of a node.
  if (error instanceof MercuryError) return { exitCode: error.code === 'CONFIG_INVALID' ? 2 : 1, message: `${error.code}: ${oneLine(error.message)}` };
  // An operating-system error (port in use, directory not writable) is the world, not a bug: one line, no stack.
  const system = error as NodeJS.ErrnoException | undefined;
  if (typeof system?.code === 'string' && typeof system.syscall === 'string') return { exitCode: 1, message: oneLine(system.message) };
  if (error instanceof WatchError) return { exitCode: 1, message: `${error.code}: ${oneLine(error.message)}` };
  // No stack trace, whatever it is (there is no debug switch): one line the operator can act on or report.
  return { exitCode: 1, message: oneLine(error instanceof Error ? `${error.name === 'Error' ? '' : `${error.name}: `}${error.message}` : String(error)) };
}

main(process.argv.slice(2)).catch((error: unknown) => {
  // One line, with or without --json: `mercury: CODE: message` is as easy for a script to match as JSON would be.
  const { exitCode, message } = failure(error);
  process.stderr.write(`mercury: ${terminalSafe(message)}\n`);
  process.exit(exitCode);
});
