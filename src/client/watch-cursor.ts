/**
 * The client side of one watch subscription without I/O: turns the node's messages (decoded by `parseServerMessage`
 * of src/api/watch.ts) into `WatchEvent`s, and keeps the seq to resume from by the one resume rule of the protocol
 * (`WatchResumeCursor`), so that a watch that reconnects (to the same node or another one) neither misses nor repeats
 * an entry. A snapshot cut off before its done page is announced again, from its start, by a new `snapshotBegin`.
 * It also keeps the hash of the last entry received (`afterHash`), which a resume sends so that a node whose chain is
 * another answers with the current state instead of continuing by seq alone (docs/decisions.md, record 45).
 */
import { WatchResumeCursor, WatchServerMessageError, type ServerMessage } from '../api/index.js';

/** The subscription id: one subscription per connection, so any constant does. */
export const SUBSCRIPTION_ID = 1;

/** Which changes a watch selects (all default to the server's defaults: puts and deletes, with values). */
export interface WatchFilterOptions {
  readonly puts?: boolean;
  readonly deletes?: boolean;
  /** Leave values out of put events and snapshot items. */
  readonly keysOnly?: boolean;
  /** Add to each change who wrote it (`author`: a token name or certificate subject, null where not recorded). */
  readonly authors?: boolean;
}

/**
 * One change, or a marker, delivered by a watch. Every one carries the `seq` of the entry (or snapshot) it is from.
 * Changes carry `author` with the `authors` filter. Changes, `snapshotEnd` and `progress` carry `hash`, the hash of
 * entry `seq` as hex, when the node sent it (nodes before record 45 do not): with `seq`, where a later watch resumes
 * (`fromSeq: seq + 1, afterHash: hash`).
 */
export type WatchEvent =
  /** A put. `value` is undefined with `keysOnly`. */
  | {
      readonly type: 'put';
      readonly seq: number;
      readonly timeMs: number;
      readonly key: Buffer;
      readonly value: Buffer | undefined;
      readonly modSeq: number;
      readonly author?: string | null;
      readonly hash?: string;
    }
  /** A delete op of a selected key (sent whether or not the key existed). */
  | {
      readonly type: 'delete';
      readonly seq: number;
      readonly timeMs: number;
      readonly key: Buffer;
      readonly modSeq: number;
      readonly author?: string | null;
      readonly hash?: string;
    }
  /** Every key k with start <= k < end (no upper bound when end is null), within a watched prefix, is gone. */
  | {
      readonly type: 'deleteRange';
      readonly seq: number;
      readonly timeMs: number;
      readonly start: Buffer;
      readonly end: Buffer | null;
      readonly modSeq: number;
      readonly author?: string | null;
      readonly hash?: string;
    }
  /**
   * The current state at `seq` follows as `snapshot` items, then `snapshotEnd`. It replaces what the consumer held for
   * the watched prefixes. It comes first when the watch started before the node's retained log, and also later, after
   * changes (a reset): when the log the watch was served from was trimmed while it lagged, or replaced (a replica that
   * installed a snapshot or was resynced, a root restored from a backup). A reset's `seq` may be lower than changes
   * already delivered: those belonged to an abandoned chain. A second `snapshotBegin` before the `snapshotEnd` means
   * the partial snapshot is to be forgotten (the connection was lost, or the node started over).
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
  | { readonly type: 'snapshotEnd'; readonly seq: number; readonly hash?: string }
  /**
   * Every selected change up to `seq` has been delivered: a watch started with `fromSeq: seq + 1` continues exactly
   * here. Delivered only with the watch option `progress: true`.
   */
  | { readonly type: 'progress'; readonly seq: number; readonly hash?: string };

/** What a message meant: events to deliver, and whether the subscription is established or refused. */
export interface CursorStep {
  readonly events: WatchEvent[];
  /** The seq the stream continues from, when the message confirmed the subscription. */
  readonly subscribedFromSeq: number | undefined;
  readonly error: { readonly code: string; readonly message: string } | undefined;
}

/** `{ hash }` of a message that has one: an event carries no `hash: undefined` key. */
function hashOf(message: { readonly hash?: string }): { hash?: string } {
  return message.hash === undefined ? {} : { hash: message.hash };
}

export class WatchCursor {
  private readonly resume: WatchResumeCursor;

  /**
   * `afterHash`: the hash of entry fromSeq - 1, when the caller knows it (sent with the first subscribe). `prefixes`:
   * the subscribed ones, which every key of a change or snapshot item must start with (default: any key).
   */
  constructor(
    fromSeq: number | undefined,
    private readonly reportProgress: boolean,
    afterHash?: string,
    private readonly prefixes: readonly Buffer[] = [Buffer.alloc(0)],
  ) {
    this.resume = new WatchResumeCursor(fromSeq, afterHash);
  }

  /** The `fromSeq` for the next subscribe (undefined: from the node's next entry; only before the first subscribed). */
  get nextSeq(): number | undefined {
    return this.resume.nextSeq;
  }

  /** The hash of entry nextSeq - 1, when known: the `afterHash` for the next subscribe. */
  get afterHash(): string | undefined {
    return this.resume.afterHash;
  }

  /** The node does not know `afterHash` (before record 45): resume by seq alone, as WatchResumeCursor.dropHash says. */
  dropHash(): void {
    this.resume.dropHash();
  }

  /** A new connection begins: a snapshot in progress on the old one is abandoned. */
  reset(): void {
    this.resume.reset();
  }

  /**
   * What `message` means. Throws `WatchServerMessageError` for a message about another subscription, or one that
   * breaks the ordering rules (`WatchResumeCursor.accept`).
   */
  onMessage(message: ServerMessage): CursorStep {
    const events: WatchEvent[] = [];
    if (message.id !== undefined && message.id !== SUBSCRIPTION_ID)
      throw new WatchServerMessageError(`${message.type}.id is ${JSON.stringify(message.id)}; this connection's only subscription is ${SUBSCRIPTION_ID}`);
    if (message.type === 'error') return { events, subscribedFromSeq: undefined, error: { code: message.code, message: message.message } };
    // A key outside the subscription is the node's fault, not the consumer's to filter: one that routes keys by
    // prefix (a cache, `mercury sync`) would otherwise take another prefix's key as its own (audit, 2026-12-06).
    if (message.type === 'events') for (const change of message.events) if (change.type !== 'deleteRange') this.checkKey(change.key, 'events');
    if (message.type === 'snapshot') for (const item of message.items) this.checkKey(item.key, 'snapshot.items');
    const firstPage = this.resume.startsSnapshot(message);
    if (!this.resume.accept(message)) return { events, subscribedFromSeq: undefined, error: undefined };
    switch (message.type) {
      case 'subscribed':
        return { events, subscribedFromSeq: message.fromSeq, error: undefined };
      case 'events': {
        const hash = hashOf(message);
        for (const change of message.events) events.push({ ...change, seq: message.seq, timeMs: message.timeMs, ...hash });
        break;
      }
      case 'snapshot':
        if (firstPage) events.push({ type: 'snapshotBegin', seq: message.seq });
        for (const item of message.items) events.push({ type: 'snapshot', seq: message.seq, ...item });
        if (message.done) events.push({ type: 'snapshotEnd', seq: message.seq, ...hashOf(message) });
        break;
      case 'progress':
        if (this.reportProgress) events.push({ type: 'progress', seq: message.seq, ...hashOf(message) });
        break;
      default:
        break;
    }
    return { events, subscribedFromSeq: undefined, error: undefined };
  }

  private checkKey(key: Buffer, where: string): void {
    if (!this.prefixes.some((prefix) => key.subarray(0, prefix.length).equals(prefix)))
      throw new WatchServerMessageError(`${where} has the key ${JSON.stringify(key.toString('utf8'))}, which is under none of the subscribed prefixes`);
  }
}
