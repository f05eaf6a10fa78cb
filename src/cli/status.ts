/**
 * `mercury status` for people: the node's `/v1/status` one field per line, sizes and times in human units, the
 * replication and storage parts summed up in a line each. Fields this printer does not know (added by a newer node)
 * are shown as JSON, so nothing is hidden.
 */
import { answerObject, fieldText, formatBytes, formatCount, formatDuration, inLine } from './output.js';

type Json = Record<string, unknown>;

function object(value: unknown): Json | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : undefined;
}

function number(value: unknown): number | undefined {
  return typeof value === 'number' ? value : undefined;
}

/** A field as text: strings as they are, anything else as JSON ('' when absent). */
function text(value: unknown): string {
  if (value === undefined || value === null) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function logLine(log: Json): string {
  return `seqs ${fieldText(log.firstSeq)}..${fieldText(log.lastSeq)}, ${formatCount(number(log.entries) ?? 0)} entries, ${formatBytes(number(log.bytes) ?? 0)}`;
}

function snapshotLine(snapshot: Json): string {
  return `snapshot at seq ${fieldText(snapshot.seq)}: ${formatCount(number(snapshot.keysReceived) ?? 0)}/${formatCount(number(snapshot.keyCount) ?? 0)} keys, ${formatBytes(number(snapshot.bytesReceived) ?? 0)}`;
}

function replicationLines(replication: Json): string[] {
  const children = Array.isArray(replication.children) ? replication.children.map(object).filter((child) => child !== undefined) : [];
  const lines = [`listen ${fieldText(replication.listen)}; ${children.length} ${children.length === 1 ? 'child' : 'children'}`];
  if (replication.phase !== undefined) {
    const upstream = object(replication.upstream);
    const lagMs = number(replication.lagMs);
    lines.push(
      `${text(replication.phase)}${upstream === undefined ? '' : ` from ${fieldText(upstream.address)} (node ${fieldText(upstream.nodeId)})`}; lag ${replication.lagEntries === null ? '?' : formatCount(number(replication.lagEntries) ?? 0)} entries, ${lagMs === undefined ? '?' : formatDuration(lagMs)}`,
      `${formatCount(number(replication.entriesApplied) ?? 0)} entries applied, ${fieldText(replication.snapshotsInstalled)} snapshots installed, ${fieldText(replication.upstreamSwitches)} upstream switches${replication.resyncPending === true ? ', resync pending' : ''}`,
    );
    const snapshot = object(replication.snapshot);
    if (snapshot !== undefined) lines.push(snapshotLine(snapshot));
    if (typeof replication.divergedReason === 'string') {
      const head = object(replication.divergedHead);
      lines.push(`DIVERGED${head === undefined ? '' : ` at seq ${fieldText(head.seq)}`}: ${replication.divergedReason}`);
    }
    if (typeof replication.lastFailure === 'string') lines.push(`last failure: ${replication.lastFailure}`);
  }
  for (const child of children) {
    const snapshot = object(child.snapshot);
    lines.push(`child ${fieldText(child.nodeId)} ${text(child.remote)} ${text(child.phase)}, sent ${fieldText(child.sentSeq)}, acked ${fieldText(child.ackedSeq)}${snapshot === undefined ? '' : `, ${snapshotLine(snapshot)}`}`);
  }
  return lines;
}

function storageLine(storage: Json): string {
  const parts = [storage.sound === false ? `DAMAGED (${fieldText(storage.damageMet)} reads met damage)` : 'sound', storage.writable === false ? `NOT WRITABLE: ${JSON.stringify(storage.writeFault)}` : 'writable'];
  return parts.join(', ');
}

/**
 * The snapshot reader budget (docs/decisions.md record 44): `4 of 64 in use, 2 refused since start, 1 watch waiting`,
 * when every reader is taken what that means for the next backup, and when LMDB's reader table in force is smaller
 * than configured, why the budget may be smaller than set and what to do.
 */
function snapshotReadersLine(readers: Json): string {
  const inUse = number(readers.inUse);
  const max = number(readers.max);
  const waiting = number(readers.watchesWaiting) ?? 0;
  const parts = [`${fieldText(readers.inUse)} of ${fieldText(readers.max)} in use`, `${formatCount(number(readers.refused) ?? 0)} refused since start`];
  if (waiting > 0) parts.push(`${formatCount(waiting)} ${waiting === 1 ? 'watch' : 'watches'} waiting`);
  const notes: string[] = [];
  if (inUse !== undefined && max !== undefined && inUse >= max) notes.push(' (ALL IN USE: new snapshots are refused 503 OVERLOADED until one ends)');
  const table = number(readers.lmdbReadersMax);
  const tableConfigured = number(readers.lmdbReadersMaxConfigured);
  if (table !== undefined && tableConfigured !== undefined && table < tableConfigured)
    notes.push(
      ` (LMDB READER TABLE OF ${formatCount(table)}, NOT THE ${formatCount(tableConfigured)} CONFIGURED: another process opened the data directory first, and the budget is a quarter of that table; close the other process, then restart the node)`,
    );
  return `${parts.join(', ')}${notes.join('')}`;
}

/**
 * The lines of `mercury status`: `name  value`, names as in the JSON so that either can be searched for. An answer
 * that is not an object is an AnswerShapeError; fields of an unexpected type are shown as JSON, never a crash.
 */
export function statusLines(value: unknown): string[] {
  const status = answerObject(value, 'the status');
  const lines: string[] = [];
  // The node chooses names and values alike: each stays on its own line.
  const line = (name: string, value: string): void => {
    lines.push(`${inLine(name).padEnd(14)} ${inLine(value)}`);
  };
  for (const [name, value] of Object.entries(status)) {
    const nested = object(value);
    if (name === 'log' && value === null) line(name, 'UNREADABLE: damaged data in the log (see storage)');
    else if (name === 'log' && nested !== undefined) line(name, logLine(nested));
    else if (name === 'replication' && nested !== undefined) replicationLines(nested).forEach((text, i) => line(i === 0 ? name : '', text));
    else if (name === 'storage' && nested !== undefined) line(name, storageLine(nested));
    else if (name === 'snapshotReaders' && nested !== undefined) line(name, snapshotReadersLine(nested));
    else if (name.endsWith('Bytes') && typeof value === 'number') line(name, formatBytes(value));
    else if (name.endsWith('Ms') && typeof value === 'number') line(name, formatDuration(value));
    else if (typeof value === 'number') line(name, fieldText(value));
    else line(name, typeof value === 'string' ? value : JSON.stringify(value));
  }
  return lines;
}
