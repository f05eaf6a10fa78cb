/**
 * The client side of the watch protocol (src/api/watch.ts) without I/O: turns the messages of one subscription
 * into events and keeps the seq to resume from, so that a watch that reconnects (to the same node or another one)
 * neither misses nor repeats an entry.
 *
 * Resume rule: `nextSeq` is the first seq not yet covered. It becomes the `fromSeq` the subscription started from
 * (as `subscribed` confirms it), then `seq + 1` after each events message, each progress message, and the last page
 * (`done`) of a snapshot. A snapshot cut off before `done` does not advance it: the next connection asks for the
 * same `fromSeq` and receives a whole new snapshot, announced by a new `snapshotBegin`. Events at a seq below
 * `nextSeq` (which a node may only send if it disagrees with the last one) are dropped.
 */

/** Which changes a watch selects (all default to the server's defaults: puts and deletes, with values). */
export interface WatchFilterOptions {
  readonly puts?: boolean;
  readonly deletes?: boolean;
  /** Leave values out of put events and snapshot items. */
  readonly keysOnly?: boolean;
}

/** One change, or a marker, delivered by a watch. Every one carries the `seq` of the entry (or snapshot) it is from. */
export type WatchEvent =
  /** A put. `value` is undefined with `keysOnly`. */
  | { readonly type: 'put'; readonly seq: number; readonly timeMs: number; readonly key: Buffer; readonly value: Buffer | undefined; readonly modSeq: number }
  /** A delete op of a selected key (sent whether or not the key existed). */
  | { readonly type: 'delete'; readonly seq: number; readonly timeMs: number; readonly key: Buffer; readonly modSeq: number }
  /** Every key k with start <= k < end (no upper bound when end is null), within a watched prefix, is gone. */
  | { readonly type: 'deleteRange'; readonly seq: number; readonly timeMs: number; readonly start: Buffer; readonly end: Buffer | null; readonly modSeq: number }
  /**
   * The watch started before the node's retained log: the current state at `seq` follows as `snapshot` items, then
   * `snapshotEnd`. It replaces what the consumer held for the watched prefixes. A second `snapshotBegin` before the
   * `snapshotEnd` means the connection was lost mid-snapshot: forget the partial one.
   */
  | { readonly type: 'snapshotBegin'; readonly seq: number }
  /** A key as it stands at `seq` (the state, not a change). */
  | {
      readonly type: 'snapshot';
      readonly seq: number;
      readonly key: Buffer;
      readonly value: Buffer | undefined;
      readonly createSeq: number;
      readonly modSeq: number;
      readonly version: number;
    }
  /** The snapshot is complete; changes after `seq` follow. */
  | { readonly type: 'snapshotEnd'; readonly seq: number }
  /** Every selected change up to `seq` has been delivered (only with the watch option `progress: true`). */
  | { readonly type: 'progress'; readonly seq: number };

type Encoding = 'utf8' | 'base64';

interface EventJson {
  readonly type: string;
  readonly key?: string;
  readonly keyEncoding?: Encoding;
  readonly value?: string;
  readonly valueEncoding?: Encoding;
  readonly start?: string;
  readonly startEncoding?: Encoding;
  readonly end?: string | null;
  readonly endEncoding?: Encoding | null;
  readonly modSeq: number;
}

interface ItemJson {
  readonly key: string;
  readonly keyEncoding: Encoding;
  readonly value?: string;
  readonly valueEncoding?: Encoding;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

/** A server message of the subscription, as JSON. */
export type ServerMessageJson =
  | { readonly type: 'subscribed'; readonly id: unknown; readonly fromSeq: number }
  | { readonly type: 'events'; readonly id: unknown; readonly seq: number; readonly timeMs: number; readonly events: readonly EventJson[] }
  | { readonly type: 'snapshot'; readonly id: unknown; readonly seq: number; readonly items: readonly ItemJson[]; readonly done: boolean }
  | { readonly type: 'progress'; readonly id: unknown; readonly seq: number }
  | { readonly type: 'unsubscribed'; readonly id: unknown }
  | { readonly type: 'error'; readonly id?: unknown; readonly code: string; readonly message: string };

function bytes(text: string | undefined, encoding: Encoding | undefined | null): Buffer {
  return Buffer.from(text ?? '', encoding === 'base64' ? 'base64' : 'utf8');
}

function optionalBytes(text: string | undefined, encoding: Encoding | undefined): Buffer | undefined {
  return text === undefined ? undefined : bytes(text, encoding);
}

function decodeEvent(seq: number, timeMs: number, event: EventJson): WatchEvent {
  switch (event.type) {
    case 'put':
      return { type: 'put', seq, timeMs, key: bytes(event.key, event.keyEncoding), value: optionalBytes(event.value, event.valueEncoding), modSeq: event.modSeq };
    case 'delete':
      return { type: 'delete', seq, timeMs, key: bytes(event.key, event.keyEncoding), modSeq: event.modSeq };
    case 'deleteRange':
      return {
        type: 'deleteRange',
        seq,
        timeMs,
        start: bytes(event.start, event.startEncoding),
        end: event.end === null || event.end === undefined ? null : bytes(event.end, event.endEncoding),
        modSeq: event.modSeq,
      };
    default:
      throw new Error(`unknown watch event type ${JSON.stringify(event.type)}`);
  }
}

/** What a message meant: events to deliver, and whether the subscription is established or refused. */
export interface CursorStep {
  readonly events: WatchEvent[];
  readonly subscribed: boolean;
  readonly error: { readonly code: string; readonly message: string } | undefined;
}

export class WatchCursor {
  private next: number | undefined;
  private inSnapshot = false;

  constructor(
    fromSeq: number | undefined,
    private readonly reportProgress: boolean,
  ) {
    this.next = fromSeq;
  }

  /** The `fromSeq` for the next subscribe (undefined: from the node's next entry; only before the first subscribed). */
  get nextSeq(): number | undefined {
    return this.next;
  }

  /** A new connection begins: a snapshot in progress on the old one is abandoned. */
  reset(): void {
    this.inSnapshot = false;
  }

  onMessage(message: ServerMessageJson): CursorStep {
    const events: WatchEvent[] = [];
    switch (message.type) {
      case 'subscribed':
        this.next ??= message.fromSeq;
        return { events, subscribed: true, error: undefined };
      case 'events':
        if (this.next !== undefined && message.seq < this.next) break;
        for (const event of message.events) events.push(decodeEvent(message.seq, message.timeMs, event));
        this.next = message.seq + 1;
        break;
      case 'snapshot':
        if (!this.inSnapshot) {
          events.push({ type: 'snapshotBegin', seq: message.seq });
          this.inSnapshot = true;
        }
        for (const item of message.items)
          events.push({
            type: 'snapshot',
            seq: message.seq,
            key: bytes(item.key, item.keyEncoding),
            value: optionalBytes(item.value, item.valueEncoding),
            createSeq: item.createSeq,
            modSeq: item.modSeq,
            version: item.version,
          });
        if (message.done) {
          events.push({ type: 'snapshotEnd', seq: message.seq });
          this.inSnapshot = false;
          this.next = message.seq + 1;
        }
        break;
      case 'progress':
        // Progress never runs ahead of a snapshot still being sent: the snapshot's own done page moves the cursor.
        if (this.inSnapshot || (this.next !== undefined && message.seq < this.next)) break;
        this.next = message.seq + 1;
        if (this.reportProgress) events.push({ type: 'progress', seq: message.seq });
        break;
      case 'error':
        return { events, subscribed: false, error: { code: message.code, message: message.message } };
      default:
        break;
    }
    return { events, subscribed: false, error: undefined };
  }
}
