/**
 * `mercury watch PREFIX [--from SEQ [--after-hash HASH]] [--json]`: prints the changes under PREFIX, one line each, until
 * Ctrl-C (exit 0).
 * A printer over the client's `watch()` (src/client/watch.ts), which owns the protocol (src/api/watch.ts), the resume
 * rule and the message limits.
 *
 * Human output: `SEQ put KEY VALUE`, `SEQ delete KEY`, `SEQ deleteRange [START, END)`, and `SEQ snapshot KEY VALUE`
 * for the items of a snapshot. Text that is not printable is shown as a JSON string, bytes that are not UTF-8 as
 * `base64:...` (showBytes in output.ts, as `mercury ls` shows keys). With --json, each event or snapshot item is one
 * JSON object with its `seq`, its keys and values as the watch protocol writes them (`key` and `keyEncoding`, ...), and
 * progress is printed too (`{"type":"progress","seq":N,"hash":H}`), so a script knows where to resume. Changes,
 * progress and a snapshot's end carry `hash`, the hash of the entry at their seq: `--from SEQ+1 --after-hash H` resumes
 * after it, and a node whose entry at SEQ is another (a root restored from an older backup) answers with a reset, not
 * with another chain's changes on top of the old state (docs/decisions.md record 45).
 *
 * A snapshot (the state of the watched keys at one seq, which replaces what the reader held) is framed by marker
 * lines, which start with `---` in human output and have a `type` of their own in JSON:
 * - `snapshotBegin` (`--- snapshot at seq N ...`): the first state this command prints (--from older than the node's
 *   log, or --after-hash naming an entry the node does not hold at --from - 1);
 * - `reset` (`--- RESET at seq N ...`), with `previousSeq`, the last seq printed before: the node replaced the stream
 *   in-band (docs/decisions.md record 40: the log the watch was served from was trimmed while it lagged, the replica
 *   installed a snapshot or was resynced, a root restored from a backup). Everything printed before is superseded,
 *   changes included, and N may be lower than seqs already printed. A snapshot that begins after anything was printed
 *   (a partial snapshot started over too) is a reset, and so is a first one older than --from asked for;
 * - `snapshotEnd` (`--- snapshot at seq N complete ...`), with the count of keys: changes after N follow.
 *
 * The command does not reconnect: a refused request or a closed connection prints one line on stderr and exits 1 (3
 * if the node cannot be reached); the line says which --from (and --after-hash, once an entry's hash was seen) resumes
 * the watch.
 */
import { encodeJsonBytes } from '../api/index.js';
import { connect, WatchClosedError, WatchError, type ClientTls, type WatchEvent } from '../client/index.js';
import { inLine, showBytes as show, terminalSafe } from './output.js';

/** `name` and `nameEncoding` fields as the watch protocol writes them. */
function bytesFields(name: string, bytes: Buffer | undefined): Record<string, string> {
  if (bytes === undefined) return {};
  const { text, encoding } = encodeJsonBytes(bytes);
  return { [name]: text, [`${name}Encoding`]: encoding };
}

/** `{ hash }` of an event that carries one (none is printed as `hash: undefined`). */
function hashField(event: { readonly hash?: string }): { hash?: string } {
  return event.hash === undefined ? {} : { hash: event.hash };
}

/** A snapshot's begin and end as the command prints them: the begin is a reset or not (see the header). */
type Marker =
  | { readonly type: 'snapshotBegin'; readonly seq: number }
  | { readonly type: 'reset'; readonly seq: number; readonly previousSeq: number | null }
  | { readonly type: 'snapshotEnd'; readonly seq: number; readonly keys: number; readonly hash?: string };

/**
 * Follows what was printed, to tell a first snapshot from a reset and to count a snapshot's keys. No I/O: `mark`
 * takes every event in order and returns the marker to print for a snapshotBegin or snapshotEnd.
 */
class SnapshotMarks {
  /** The seq of the last change or state printed (--from - 1 before anything: the state the caller says it holds). */
  private lastSeq: number | undefined;
  private printed = false;
  private keys = 0;

  constructor(private readonly fromSeq: number | undefined) {
    this.lastSeq = fromSeq === undefined ? undefined : fromSeq - 1;
  }

  mark(event: WatchEvent): Marker | undefined {
    switch (event.type) {
      case 'snapshotBegin': {
        const reset = this.printed || (this.fromSeq !== undefined && event.seq < this.fromSeq - 1);
        const marker: Marker = reset ? { type: 'reset', seq: event.seq, previousSeq: this.lastSeq ?? null } : { type: 'snapshotBegin', seq: event.seq };
        this.keys = 0;
        this.seen(event.seq);
        return marker;
      }
      case 'snapshot':
        this.keys++;
        this.seen(event.seq);
        return undefined;
      case 'snapshotEnd':
        this.seen(event.seq);
        return { type: 'snapshotEnd', seq: event.seq, keys: this.keys, ...hashField(event) };
      case 'progress':
        return undefined;
      default:
        this.seen(event.seq);
        return undefined;
    }
  }

  private seen(seq: number): void {
    this.printed = true;
    this.lastSeq = seq;
  }
}

function humanMarker(marker: Marker, prefix: string): string {
  const keys = `the keys under ${JSON.stringify(prefix)}`;
  switch (marker.type) {
    case 'snapshotBegin':
      return `--- snapshot at seq ${marker.seq}: the current state of ${keys} follows ---`;
    case 'reset':
      return `--- RESET at seq ${marker.seq}: the node replaced the stream; the state of ${keys} below replaces everything printed before${marker.previousSeq === null ? '' : ` (up to seq ${marker.previousSeq})`} ---`;
    case 'snapshotEnd':
      return `--- snapshot at seq ${marker.seq} complete: ${marker.keys} ${marker.keys === 1 ? 'key' : 'keys'}; changes after seq ${marker.seq} follow ---`;
  }
}

function humanLine(event: WatchEvent): string | undefined {
  switch (event.type) {
    case 'put':
      return `${event.seq} put ${show(event.key)}${event.value === undefined ? '' : ` ${show(event.value)}`}`;
    case 'delete':
      return `${event.seq} delete ${show(event.key)}`;
    case 'deleteRange':
      return `${event.seq} deleteRange [${show(event.start)}, ${event.end === null ? '(end)' : show(event.end)})`;
    case 'snapshot':
      return `${event.seq} snapshot ${show(event.key)} ${show(event.value)}`;
    default:
      return undefined;
  }
}

function jsonLine(event: WatchEvent): string | undefined {
  switch (event.type) {
    case 'put':
      return JSON.stringify({ seq: event.seq, type: 'put', ...bytesFields('key', event.key), ...bytesFields('value', event.value), modSeq: event.modSeq, ...hashField(event) });
    case 'delete':
      return JSON.stringify({ seq: event.seq, type: 'delete', ...bytesFields('key', event.key), modSeq: event.modSeq, ...hashField(event) });
    case 'deleteRange': {
      const end = event.end === null ? { end: null, endEncoding: null } : bytesFields('end', event.end);
      return JSON.stringify({ seq: event.seq, type: 'deleteRange', ...bytesFields('start', event.start), ...end, modSeq: event.modSeq, ...hashField(event) });
    }
    case 'snapshot':
      return JSON.stringify({
        seq: event.seq,
        type: 'snapshot',
        ...bytesFields('key', event.key),
        ...bytesFields('value', event.value),
        createSeq: event.createSeq,
        modSeq: event.modSeq,
        version: event.version,
      });
    case 'progress':
      return JSON.stringify({ type: 'progress', seq: event.seq, ...hashField(event) });
    default:
      return undefined;
  }
}

/** Runs until Ctrl-C (exit 0) or until the node refuses or closes the watch (throws; main prints it and exits). */
export async function watchCommand(
  baseUrl: string,
  prefix: string,
  options: { fromSeq: number | undefined; afterHash?: string; json: boolean; tls?: ClientTls; token?: string },
): Promise<void> {
  const client = connect([baseUrl], { ...options.tls, ...(options.token === undefined ? {} : { token: options.token }) });
  const watch = client.watch({
    prefix,
    fromSeq: options.fromSeq,
    ...(options.afterHash === undefined ? {} : { afterHash: options.afterHash }),
    progress: options.json,
    reconnect: false,
    onSubscribed: (fromSeq) => {
      if (!options.json && process.stderr.isTTY) process.stderr.write(`watching ${JSON.stringify(prefix)} from seq ${fromSeq}; Ctrl-C to stop\n`);
    },
  });
  process.once('SIGINT', () => {
    void watch.return();
    process.exit(0);
  });
  const line = options.json ? jsonLine : humanLine;
  const marks = new SnapshotMarks(options.fromSeq);
  try {
    for await (const event of watch) {
      const marker = marks.mark(event);
      const text = marker === undefined ? line(event) : options.json ? JSON.stringify(marker) : humanMarker(marker, prefix);
      if (text !== undefined) process.stdout.write(`${terminalSafe(text)}\n`);
    }
  } catch (error) {
    if (error instanceof WatchClosedError) {
      const resume =
        error.resumeSeq === undefined ? '' : `; resume with --from ${error.resumeSeq}${error.resumeHash === undefined ? '' : ` --after-hash ${error.resumeHash}`}`;
      process.stderr.write(`mercury: ${terminalSafe(`watch closed by the node (${error.closeCode}${error.reason.length > 0 ? `: ${inLine(error.reason)}` : ''})${resume}`)}\n`);
    } else if (error instanceof WatchError) {
      // Refused by the node (its code: PREFIX_TOO_LARGE, ...) or a broken protocol (PROTOCOL).
      process.stderr.write(`mercury: ${terminalSafe(`${error.code}: ${error.message}`)}\n`);
    } else throw error;
    process.exit(1);
  }
}
