/**
 * `mercury watch PREFIX [--from SEQ] [--json]`: prints the changes under PREFIX, one line each, until Ctrl-C (exit 0).
 * A printer over the client's `watch()` (src/client/watch.ts), which owns the protocol (src/api/watch.ts), the resume
 * rule and the message limits.
 *
 * Human output: `SEQ put KEY VALUE`, `SEQ delete KEY`, `SEQ deleteRange [START, END)`, and `SEQ snapshot KEY VALUE`
 * for the items of a snapshot (when --from is older than the node's log). Text that is not printable is shown as a
 * JSON string, bytes that are not UTF-8 as `base64:...` (showBytes in output.ts, as `mercury ls` shows keys). With
 * --json, each event or snapshot item is one JSON object with its `seq`, its keys and values as the watch protocol
 * writes them (`key` and `keyEncoding`, ...), and progress is printed too (`{"type":"progress","seq":N}`), so a
 * script knows where to resume.
 *
 * The command does not reconnect: a refused request or a closed connection prints one line on stderr and exits 1 (3
 * if the node cannot be reached); the line says which --from resumes the watch.
 */
import { encodeJsonBytes } from '../api/index.js';
import { connect, WatchClosedError, WatchError, type ClientTls, type WatchEvent } from '../client/index.js';
import { showBytes as show, terminalSafe } from './output.js';

/** `name` and `nameEncoding` fields as the watch protocol writes them. */
function bytesFields(name: string, bytes: Buffer | undefined): Record<string, string> {
  if (bytes === undefined) return {};
  const { text, encoding } = encodeJsonBytes(bytes);
  return { [name]: text, [`${name}Encoding`]: encoding };
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
      return JSON.stringify({ seq: event.seq, type: 'put', ...bytesFields('key', event.key), ...bytesFields('value', event.value), modSeq: event.modSeq });
    case 'delete':
      return JSON.stringify({ seq: event.seq, type: 'delete', ...bytesFields('key', event.key), modSeq: event.modSeq });
    case 'deleteRange': {
      const end = event.end === null ? { end: null, endEncoding: null } : bytesFields('end', event.end);
      return JSON.stringify({ seq: event.seq, type: 'deleteRange', ...bytesFields('start', event.start), ...end, modSeq: event.modSeq });
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
      return JSON.stringify({ type: 'progress', seq: event.seq });
    default:
      return undefined;
  }
}

/** Runs until Ctrl-C (exit 0) or until the node refuses or closes the watch (throws; main prints it and exits). */
export async function watchCommand(
  baseUrl: string,
  prefix: string,
  options: { fromSeq: number | undefined; json: boolean; tls?: ClientTls; token?: string },
): Promise<void> {
  const client = connect([baseUrl], { ...options.tls, ...(options.token === undefined ? {} : { token: options.token }) });
  const watch = client.watch({
    prefix,
    fromSeq: options.fromSeq,
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
  try {
    for await (const event of watch) {
      const text = line(event);
      if (text !== undefined) process.stdout.write(`${terminalSafe(text)}\n`);
    }
  } catch (error) {
    if (error instanceof WatchClosedError) {
      const resume = error.resumeSeq === undefined ? '' : `; resume with --from ${error.resumeSeq}`;
      process.stderr.write(`mercury: ${terminalSafe(`watch closed by the node (${error.closeCode}${error.reason.length > 0 ? `: ${error.reason}` : ''})${resume}`)}\n`);
    } else if (error instanceof WatchError) {
      // Refused by the node (its code: PREFIX_TOO_LARGE, ...) or a broken protocol (PROTOCOL).
      process.stderr.write(`mercury: ${terminalSafe(`${error.code}: ${error.message}`)}\n`);
    } else throw error;
    process.exit(1);
  }
}
