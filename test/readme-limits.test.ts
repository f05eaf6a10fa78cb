/**
 * The README's limits table against the constants it quotes. Limits change often (every audit moves one) and the table
 * is prose, so nothing else notices when a row goes stale: each row's figures are rebuilt here from the production
 * limits and must appear in it as written. A new row must be given its figures here too (the set of rows is checked),
 * and a figure the table stops stating fails here until the row or this list is brought up to date.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { TXN_JSON_DEPTH_MAX, TXN_JSON_ELEMENTS_MAX, WATCH_SERVER_MESSAGE_BYTES_MAX, WIRE_SMALL_FRAME_BYTES_MAX } from '../src/api/index.js';
import { AUTHORIZATION_HEADER_CHARS_MAX, TOKEN_EXPIRES_IN_MS_MAX } from '../src/auth/index.js';
import { SCOPE_CHARS_MAX, SCOPES_PER_TOKEN_MAX } from '../src/auth/scopes.js';
import { SUBJECT_CHARS_MAX } from '../src/auth/records.js';
import * as L from '../src/limits.js';
import { LOG_BUDGET_DEFAULT, LOG_BUFFERED_BYTES_MAX } from '../src/logging/index.js';
import { FORWARD_TIMEOUT_MS } from '../src/node/forward.js';
import { NODE_LIMITS } from '../src/node/index.js';
import { HTTP_CONNECTIONS_MIN, openFilesNeeded } from '../src/node/limits.js';
import { SEND_SLICE_BYTES } from '../src/server/http-io.js';
import { wireOutputShareBytes } from '../src/wire/limits.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** 10,000 */
const count = (n: number): string => n.toLocaleString('en-US');
/** 1 MiB, 12 KiB, 1 GiB: the table's units for a whole number of them. */
function bytes(n: number): string {
  for (const [unit, size] of [['GiB', GiB], ['MiB', MiB], ['KiB', KiB]] as const) if (n % size === 0) return `${n / size} ${unit}`;
  return `${count(n)} bytes`;
}
/** 30 s, 5 min */
function duration(ms: number): string {
  assert.equal(ms % 1000, 0, `${ms} ms is not a whole number of seconds`);
  return ms % 60_000 === 0 && ms >= 300_000 ? `${ms / 60_000} min` : `${ms / 1000} s`;
}
/** What a string of the largest value is in base64: 1,398,104 bytes for 1 MiB. */
const base64Bytes = (n: number): number => 4 * Math.ceil(n / 3);

const { http, replication, watch, wire, log, commit, store } = NODE_LIMITS;

/** Each row of the table, by its first cell, and the figures it must state. */
const ROWS: Readonly<Record<string, readonly string[]>> = {
  Key: [`1 to ${L.KEY_BYTES_MAX} bytes`],
  Value: [`${bytes(commit.valueBytesMax)} by default`, `up to ${bytes(L.VALUE_BYTES_CEILING)}`],
  Transaction: [
    `${count(L.TXN_OPS_MAX)} ops per branch`,
    `${count(L.TXN_COMPARES_MAX)} compares`,
    `at most ~${Math.round(L.JSON_BODY_BYTES_MAX / MiB)} MiB`,
    `one entry of ${bytes(L.ENTRY_BYTES_MAX)} of ops`,
    `nested at most ${TXN_JSON_DEPTH_MAX} deep`,
    `at most ${count(TXN_JSON_ELEMENTS_MAX)} JSON values`,
    `(${count(base64Bytes(commit.valueBytesMax))} bytes by default)`,
    `each member name at most ${L.JSON_NAME_BYTES_MAX} bytes`,
  ],
  'Request bodies in flight': [
    `${Math.round(http.bodyBytesInFlightMax / MiB)} MiB per node over all connections`,
    `longer than ${count(WIRE_SMALL_FRAME_BYTES_MAX)} bytes`,
    `holds at most ${Math.round(http.bodyBytesInFlightPerAddressMax / MiB)} MiB of it`,
  ],
  'Range delete': [`${count(commit.rangeDeleteKeysMax)} keys removed`],
  'Compare reads': [`${bytes(commit.compareReadBytesMax)} of key records`],
  'Range page': [`${count(L.RANGE_LIMIT_MAX)} items or ${bytes(http.rangePageBytesMax)} of keys and values`],
  'Log read': [`${count(L.LOG_READ_LIMIT_MAX)} entries`, `reaches ${bytes(http.logPageBytesMax)} of records`],
  'Answers not taken (every HTTP answer; watches have their own rule)': [
    `values over ${bytes(SEND_SLICE_BYTES)} are written in slices of ${bytes(SEND_SLICE_BYTES)}`,
    `takes nothing for ${duration(http.sendStallMs)}`,
    `within ${duration(http.sendStallMs)} of its end`,
    `keep-alive timeout (${duration(http.keepAliveTimeoutMs)})`,
  ],
  'Snapshots taken at a trickle (`GET /v1/snapshot`)': [
    `at least ${bytes(http.snapshotPaceBytesMin)} in each minute`,
    ...(http.snapshotPaceWindowMs === 60_000 ? [] : ['a pace window of one minute']),
  ],
  'Snapshot readers (per node)': [
    `${store.snapshotReadersMax} snapshots held at once`,
    `(at most ${watch.snapshotsMax} of them)`,
    `holds ${count(store.readersMax)} (\`maxReaders\``,
  ],
  'Commit queue': [`${count(commit.queueRequestsMax)} requests or ${bytes(commit.queueBytesMax)}`],
  'Reads parked on `minSeq` (HTTP and wire, per node)': [
    `${count(http.seqWaitersMax)}, then \`OVERLOADED\``,
    `(default ${duration(L.MIN_SEQ_WAIT_MS_DEFAULT)}, at most ${duration(L.MIN_SEQ_WAIT_MS_MAX)},`,
  ],
  'Writes a replica forwards to its upstream (HTTP and wire)': [
    `${http.forwardedWritesMax} not yet answered`,
    `awaited at most ${duration(FORWARD_TIMEOUT_MS)}`,
    `at most ${duration(http.forwardedWriteWaitMs)} more`,
  ],
  'Open files (per node)': [
    `need ${count(openFilesNeeded(NODE_LIMITS))} files`,
    `${count(http.connectionsMax)} HTTP connections`,
    `${wire.connectionsMax} wire connections`,
    `${http.forwardedWritesMax} forwarded writes`,
    `${L.REPLICATION_CHILDREN_MAX_CEILING} children`,
    `${replication.closingSocketsMax} replication sockets closing and ${replication.handshakingSocketsMax} in their handshake`,
    `${L.NODE_IDLE_FILES_MAX} for an idle node`,
    `under ${count(openFilesNeeded(NODE_LIMITS) - http.connectionsMax + HTTP_CONNECTIONS_MIN)} files (fewer than ${HTTP_CONNECTIONS_MIN} HTTP connections)`,
  ],
  'Log retention': [
    `${count(log.retainEntries)} entries or ${bytes(log.retainBytes)} by default`,
    `${log.trimIntervalMs === 1000 ? 'once a second' : duration(log.trimIntervalMs)}`,
    `at most ${count(log.trimBatchEntries)} entries`,
  ],
  HTTP: [
    `first byte within ${duration(http.firstByteTimeoutMs)}`,
    `at most ${count(http.tlsHandshakesMax)} connections in their TLS handshake at once, ${http.tlsHandshakesPerAddressMax} per remote host`,
    `headers within ${duration(http.headersTimeoutMs)}`,
    `whole request within ${duration(http.requestTimeoutMs)}`,
    `destroyed ${duration(L.HTTP_CLOSE_FLUSH_MS)} after the answer`,
    `${count(http.connectionsMax)} connections`,
    `${count(L.PROCESS_OPEN_FILES_RESERVED)} of the ${count(L.PROCESS_OPEN_FILES_MAX)} open files`,
    `${count(http.connectionsPerAddressMax)} per remote host`,
    `${L.HTTP_PIPELINED_RUNNING_MAX} pipelined requests of one connection`,
    `at most ${http.pipelinedAheadMax} requests run ahead`,
    `larger than ${bytes(SEND_SLICE_BYTES)}`,
    `at most ${bytes(http.answerBytesHeldMax)} over all connections`,
    `at most ${bytes(http.answerBytesHeldPerAddressMax)} for one host's connections`,
  ],
  Replication: [
    `${L.UPSTREAMS_MAX} upstreams per replica`,
    `${L.REPLICATION_CHILDREN_MAX_DEFAULT} children per node`,
    `up to ${L.REPLICATION_CHILDREN_MAX_CEILING}`,
    `frames up to ${bytes(replication.frameBytesMax)} from an upstream and ${bytes(replication.childFrameBytesMax)} from a child`,
    `${replication.childrenPerAddressMax} children per remote host`,
    `${bytes(replication.childWindowBytesMax)} / ${count(replication.childWindowEntriesMax)} entries unacknowledged per child`,
    `closed after ${duration(replication.childAckTimeoutMs)} without an ACK`,
    `${bytes(replication.childrenQueuedBytesMax)} queued in the process`,
    `${bytes(replication.childrenQueuedBytesPerAddressMax)} for the children of one remote host`,
    `take its child past ${bytes(replication.childQueuedBytesShare)}`,
    `at most ${replication.childSnapshotsPerAddressMax} snapshots at once`,
    `at most ${replication.closingSocketsMax} closing at once`,
    `at most ${replication.handshakingSocketsMax} in their first byte and handshake together, ${replication.handshakingSocketsPerAddressMax} of them from one host (${duration(replication.handshakeTimeoutMs)} each`,
    `a replica's handshake with an upstream ${duration(replication.handshakeTimeoutMs)}`,
    `a return to its preferred upstream ${duration(replication.preferredHandshakeTimeoutMs)}`,
    `returns every ${duration(replication.preferredUpstreamRetryMs)} doubling to ${duration(replication.preferredUpstreamRetryMsMax)}`,
  ],
  'Wire port': [
    `${wire.connectionsMax} connections, ${wire.connectionsPerAddressMax} per host`,
    `HELLO within ${duration(wire.helloTimeoutMs)}`,
    `each frame within ${duration(wire.frameTimeoutMs)} of its first byte`,
    `idle connections closed after ${duration(wire.idleTimeoutMs)}`,
    `${count(WIRE_SMALL_FRAME_BYTES_MAX)} bytes for any other type`,
    `${count(wire.inFlightPerConnectionMax)} requests in flight and ${bytes(wire.outputBytesMax)} of unsent answers per connection`,
    `${bytes(wire.outputBytesTotalMax)} of unsent answers over the port`,
    `each connection's share ${bytes(wireOutputShareBytes(wire))}`,
    `past ${bytes(wire.outputBytesPerAddressMax)} held for one host's connections`,
  ],
  Tokens: [
    'a name of 1 to 64 characters',
    `at most ${SCOPES_PER_TOKEN_MAX} scopes of at most ${count(SCOPE_CHARS_MAX)} characters each`,
    `1 to ${SUBJECT_CHARS_MAX} printable characters`,
    `1 s to ${TOKEN_EXPIRES_IN_MS_MAX / 86_400_000} days`,
    `longer than ${AUTHORIZATION_HEADER_CHARS_MAX} characters`,
  ],
  Watch: [
    `${watch.subscriptionsPerConnectionMax} subscriptions per connection, ${watch.prefixesPerSubscriptionMax} prefixes each, ${bytes(watch.prefixBytesPerConnectionMax)} of prefixes per connection`,
    `${bytes(watch.prefixBytesPerAddressMax / http.connectionsPerAddressMax)} per allowed connection`,
    `at least ${watch.subscriptionBytesMin} bytes`,
    `${bytes(watch.clientMessageBytesMax)} per client message, each in full within ${duration(watch.frameTimeoutMs)}`,
    `${bytes(watch.queueBytesMax)} queued per connection, and ${bytes(watch.queueBytesTotalMax)} over all connections: a message that would take a connection past ${bytes(watch.queueBytesShareMax)} is queued only within them`,
    `at most ${bytes(watch.queueBytesTotalMax)} plus ${bytes(watch.queueBytesShareMax)} per connection`,
    `closed (4008) after ${duration(watch.stallMs)} stalled`,
    `closed (4408) after ${duration(watch.peerSilentMs)}`,
    `${watch.snapshotsMax} snapshots at once, each sent within ${duration(watch.snapshotMsMax)}`,
    `ids of 1 to ${watch.idCharsMax} characters`,
    `the ${bytes(WATCH_SERVER_MESSAGE_BYTES_MAX)} a client accepts per message`,
  ],
  'Node log (`mercury serve`)': [
    `${LOG_BUDGET_DEFAULT.linesPerWindow} lines of one message per ${duration(LOG_BUDGET_DEFAULT.windowMs)}, ${LOG_BUDGET_DEFAULT.linesPerPeerPerWindow} of them naming one peer`,
    `${bytes(LOG_BUFFERED_BYTES_MAX)} of lines waiting for stderr`,
  ],
};

/** The table's rows as first cell -> the rest of the row, from the README's "Limits" section. */
function limitsTable(readme: string): Map<string, string> {
  const section = readme.slice(readme.indexOf('\n## Limits\n'), readme.indexOf('\n## Tests\n'));
  assert.ok(section.length > 0, 'the README has a Limits section before Tests');
  const rows = new Map<string, string>();
  for (const line of section.split('\n')) {
    const match = /^\| (.+?) \| (.*) \|$/.exec(line);
    if (match === null || match[1] === 'Limit' || match[1] === '---') continue;
    rows.set(match[1]!, match[2]!);
  }
  return rows;
}

describe('docs: README limits table', () => {
  const table = limitsTable(readFileSync(new URL('../../README.md', import.meta.url), 'utf8'));

  test('docs: every row of the limits table has its figures checked here, and every checked row is in the table', () => {
    assert.deepEqual([...table.keys()].sort(), Object.keys(ROWS).sort());
  });

  test("docs: each row states the production limits' figures", () => {
    const stale: string[] = [];
    for (const [row, figures] of Object.entries(ROWS)) {
      const text = table.get(row) ?? '';
      for (const figure of figures) if (!text.includes(figure)) stale.push(`${row}: "${figure}"`);
    }
    assert.deepEqual(stale, [], 'rows of the README limits table that do not state these figures (the limit or the row changed)');
  });
});
