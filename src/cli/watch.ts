/**
 * `mercury watch PREFIX [--from SEQ] [--json]`: subscribes to PREFIX on the node's `/v1/watch` (src/api/watch.ts)
 * and prints one line per change until Ctrl-C (exit 0).
 *
 * Human output: `SEQ put KEY VALUE`, `SEQ delete KEY`, `SEQ deleteRange [START, END)`, and `SEQ snapshot KEY VALUE`
 * for the items of a snapshot (when --from is older than the node's log). Text that is not printable is shown as a
 * JSON string, bytes that are not UTF-8 as `base64:...`. With --json, each event or snapshot item is one JSON object
 * with its `seq`, and progress messages are printed too (`{"type":"progress","seq":N}`), so a script knows where to
 * resume. A refused request or a closed connection prints one line on stderr and exits 1 (3 if the node cannot be
 * reached); the line says which --from resumes the watch.
 */
import { WebSocket, type RawData } from 'ws';
import { UnavailableError } from '../client/index.js';

/** The node sends one entry per message; the largest entry is far below this. */
const MESSAGE_BYTES_MAX = 1024 * 1024 * 1024;

interface EventJson {
  readonly type: string;
  readonly [field: string]: unknown;
}

type ServerMessage =
  | { type: 'subscribed'; fromSeq: number }
  | { type: 'events'; seq: number; events: EventJson[] }
  | { type: 'snapshot'; seq: number; items: Record<string, unknown>[]; done: boolean }
  | { type: 'progress'; seq: number }
  | { type: 'unsubscribed' }
  | { type: 'error'; code: string; message: string };

/** Shows a key or value on one line. */
function show(text: unknown, encoding: unknown): string {
  if (typeof text !== 'string') return 'null';
  if (encoding === 'base64') return `base64:${text}`;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what must not reach the terminal raw
  return /^[^\u0000-\u0020"\u007f-\u009f]+$/.test(text) ? text : JSON.stringify(text);
}

function humanEvent(seq: number, event: EventJson): string {
  switch (event.type) {
    case 'put':
      return `${seq} put ${show(event.key, event.keyEncoding)}${event.value === undefined ? '' : ` ${show(event.value, event.valueEncoding)}`}`;
    case 'delete':
      return `${seq} delete ${show(event.key, event.keyEncoding)}`;
    case 'deleteRange':
      return `${seq} deleteRange [${show(event.start, event.startEncoding)}, ${event.end === null ? '(end)' : show(event.end, event.endEncoding)})`;
    default:
      return `${seq} ${event.type} ${JSON.stringify(event)}`;
  }
}

function fail(message: string): never {
  process.stderr.write(`mercury: ${message}\n`);
  process.exit(1);
}

/** Runs until Ctrl-C (exit 0) or until the node refuses or closes the watch (exit 1). */
export async function watchCommand(baseUrl: string, prefix: string, options: { fromSeq: number | undefined; json: boolean }): Promise<void> {
  const url = `${baseUrl.replace(/^http/, 'ws')}/v1/watch`;
  const socket = new WebSocket(url, { perMessageDeflate: false, maxPayload: MESSAGE_BYTES_MAX });
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', (error) => reject(new UnavailableError(`cannot reach ${url}: ${error.message}`, { cause: error })));
  });
  const out = (line: string): void => void process.stdout.write(`${line}\n`);
  // The first seq not yet shown: where a new watch resumes.
  let resumeSeq = options.fromSeq;
  let stopping = false;
  process.once('SIGINT', () => {
    stopping = true;
    socket.close(1000);
    process.exit(0);
  });
  socket.on('message', (data: RawData) => {
    const message = JSON.parse((data as Buffer).toString('utf8')) as ServerMessage;
    switch (message.type) {
      case 'subscribed':
        resumeSeq = message.fromSeq;
        if (!options.json && process.stderr.isTTY) process.stderr.write(`watching ${JSON.stringify(prefix)} from seq ${message.fromSeq}; Ctrl-C to stop\n`);
        return;
      case 'events':
        for (const event of message.events) out(options.json ? JSON.stringify({ seq: message.seq, ...event }) : humanEvent(message.seq, event));
        resumeSeq = message.seq + 1;
        return;
      case 'snapshot':
        for (const item of message.items)
          out(options.json ? JSON.stringify({ seq: message.seq, type: 'snapshot', ...item }) : `${message.seq} snapshot ${show(item.key, item.keyEncoding)} ${show(item.value, item.valueEncoding)}`);
        if (message.done) resumeSeq = message.seq + 1;
        return;
      case 'progress':
        if (options.json) out(JSON.stringify({ type: 'progress', seq: message.seq }));
        resumeSeq = message.seq + 1;
        return;
      case 'error':
        fail(`${message.code}: ${message.message}`);
        break;
      default:
        return;
    }
  });
  socket.on('error', () => {}); // the close event that follows reports it
  socket.send(JSON.stringify({ type: 'subscribe', id: 1, prefixes: [prefix], ...(options.fromSeq === undefined ? {} : { fromSeq: options.fromSeq }) }));
  await new Promise<void>((resolve) =>
    socket.once('close', (code: number, reason: Buffer) => {
      if (stopping) return resolve();
      const resume = resumeSeq === undefined ? '' : `; resume with --from ${resumeSeq}`;
      fail(`watch closed by the node (${code}${reason.length > 0 ? `: ${reason.toString('utf8')}` : ''})${resume}`);
    }),
  );
}

