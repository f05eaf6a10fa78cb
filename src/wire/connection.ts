/**
 * One client connection of the wire port (frames specified in src/api/wire.ts): HELLO first, then GET, PUT and DELETE
 * with the HTTP API's semantics (src/server/kv-ops.ts), many in flight, answered as they finish.
 *
 * Answers finished within one event-loop turn leave in one write: they are queued and flushed on `setImmediate`, after
 * the poll phase has read every request that arrived and the group commit has resolved every write of its entry. That
 * is where the wire port saves its system calls over HTTP/1.1, which writes each answer on its own.
 *
 * Bounds: the reader refuses a frame over the limit from its length field (frames before HELLO: the size of a HELLO);
 * a frame longer than the largest GET is judged from its header before it is gathered: only a PUT may be, and it holds
 * its length in the node's body budget (shared with HTTP) from then until it is answered or the connection closes;
 * at most `inFlightPerConnectionMax` requests are in flight, and the socket is not read while that many are, or while
 * more than `outputBytesMax` of answers wait for the kernel, or while it holds more than its share of the port's
 * `outputBytesTotalMax` and the port holds more than that; a read whose answer would take both past them is not
 * queued: it waits, and nothing after it is read, until the client takes its answers, or is answered OVERLOADED
 * (WIRE_OUTPUT_FULL) if the connection has none on their way; reads that wake from a minSeq wait past those bounds
 * are read when the client takes its answers. Timeouts are enforced by the server's sweep (`sweep`).
 */
import { setMaxListeners } from 'node:events';
import type { Socket } from 'node:net';
import {
  MIN_SEQ_WAIT_MS_DEFAULT,
  MIN_SEQ_WAIT_MS_MAX,
  MercuryError,
  WIRE_HEADER_BYTES,
  WIRE_HELLO_FRAME_BYTES_MAX,
  WIRE_PROTOCOL_VERSION,
  WIRE_SMALL_FRAME_BYTES_MAX,
  WireFrameReader,
  WireFrameType,
  decodeRequest,
  ValueFrameEncoder,
  encodeError,
  encodeGoaway,
  encodeReady,
  encodeWritten,
  isMercuryError,
  validateKey,
  valueTooLarge,
  type OversizedFrame,
  type WireFrame,
  type WireFrameHead,
  type WireRequest,
} from '../api/index.js';
import { requireRead, requireSomeWriteScope, type Principal } from '../auth/index.js';
import { TLS_HANDSHAKE_BYTE } from '../net/index.js';
import { compareFailed, deleteRequest, putRequest, requireKeyWrite, type WriteCaller } from '../server/index.js';
import { wireOutputShareBytes, type WireLimits } from './limits.js';
import type { WireNode } from './wire-node.js';

type State = 'hello' | 'open' | 'closing';

/** Every connection's GET answers are encoded through this one (reads are synchronous, one at a time). */
const VALUE_FRAMES = new ValueFrameEncoder();

/** A frame other than PUT longer than the largest GET (refused from its header, whatever its type). */
function smallFrameTooLarge(frame: { readonly id: number; readonly length: number }): MercuryError {
  return new MercuryError('BODY_TOO_LARGE', `frame ${frame.id} is ${frame.length} bytes; frames other than PUT are at most ${WIRE_SMALL_FRAME_BYTES_MAX}`, {
    details: { limit: WIRE_SMALL_FRAME_BYTES_MAX },
  });
}

export interface ConnectionContext {
  readonly node: WireNode;
  readonly limits: WireLimits;
  /** The largest frame after HELLO (wireFrameBytesMaxFor the node's value limit). */
  readonly frameBytesMax: number;
  readonly nowMs: () => number;
  /** Counts of what the port did, for metrics. */
  readonly counts: WireCounts;
  /** Answer bytes every connection of the port holds together (each one's `outputBytes`). */
  readonly portOutputBytes: () => number;
  /** The remote host this connection counts under (`hostSlotKey`), for its shares of the node's budgets. */
  readonly address: string;
  /** Answer bytes the connections of this connection's host hold together (record 81). */
  readonly addressOutputBytes: () => number;
  readonly onClosed: (connection: WireConnection) => void;
}

export interface WireCounts {
  requests: number;
  errors: number;
  connectionErrors: number;
}

export class WireConnection {
  private state: State = 'hello';
  private readonly reader: WireFrameReader;
  private principal: Principal | undefined;
  private token: string | undefined;
  private inFlight = 0;
  /**
   * Bytes of the node's body budget reserved at the head of the PUT frame now arriving: the PUT holds them once the
   * frame is whole, the connection gives them back if it closes first.
   */
  private frameReservedBytes = 0;
  /**
   * Reads whose minSeq arrived while the output was over `outputBytesMax`: read once the client has taken enough of
   * it. They woke together (one seq wakes every read waiting for it), so reading each at once would queue up to
   * `inFlightPerConnectionMax` answers of the largest value for a client that reads nothing. Also the reads whose
   * answer did not fit the port's output budget while this connection had answers on their way (`answerRead`). While
   * any wait, no further request is read.
   */
  private readonly readsWoken: { readonly id: number; readonly key: Buffer }[] = [];
  /**
   * The sweep found reads waiting for room in the port's output budget with none of this connection's answers on their
   * way, and refused them: until a read of it finds room again, such a read is refused at once rather than a sweep later.
   */
  private refusingWhilePortFull = false;
  private readonly out: Buffer[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  /** Not reading the socket: too many requests in flight or too many answer bytes queued. */
  private blocked = false;
  private firstByteSeen = false;
  readonly openedMs: number;
  private lastActivityMs: number;
  /** When the frame now arriving started to arrive (undefined: none is partly in). */
  private partialSinceMs: number | undefined;
  /** The reader's count of ended frames when `partialSinceMs` was last looked at. */
  private framesEnded = 0;
  private closingSinceMs: number | undefined;
  /** The ERROR or GOAWAY that ends a closing connection, sent once nothing is in flight. */
  private finalFrame: Buffer | undefined;
  /**
   * Aborted when the socket closes, or when the connection fails (its reason that error): ends the reads parked on
   * minSeq, which must not outlive the connection.
   */
  private readonly gone = new AbortController();
  /**
   * Reads parked on minSeq, each with its own signal: aborted with the connection's `gone` (its reason), or alone,
   * with PERMISSION_DENIED, when its token's new grant no longer reads its key (`recheck`).
   */
  private readonly parked = new Set<{ readonly key: Buffer; readonly refused: AbortController }>();

  constructor(
    readonly socket: Socket,
    private readonly context: ConnectionContext,
  ) {
    this.openedMs = context.nowMs();
    this.lastActivityMs = this.openedMs;
    this.reader = new WireFrameReader(WIRE_HELLO_FRAME_BYTES_MAX);
    socket.setNoDelay(true);
    // Each forwarded write listens on the signal until it settles, up to inFlightPerConnectionMax of them: past Node's
    // default of 10, every such connection printed a MaxListenersExceededWarning ("memory leak") on stderr.
    setMaxListeners(0, this.gone.signal);
    this.gone.signal.addEventListener('abort', () => {
      for (const read of this.parked) read.refused.abort(this.gone.signal.reason);
    });
    socket.on('data', (chunk: Buffer) => this.received(chunk));
    socket.on('error', () => socket.destroy());
    // A client that reads its answers again lets the node read its requests again.
    socket.on('drain', () => {
      this.readWoken();
      if (this.blocked && this.state !== 'closing') this.pump();
    });
    socket.once('close', () => {
      this.gone.abort();
      this.state = 'closing';
      this.releaseFrameReservation();
      context.onClosed(this);
    });
  }

  /** Answer bytes this connection holds that its client has not taken: queued here, and in the socket's buffer. */
  get outputBytes(): number {
    return this.outBytes + this.socket.writableLength;
  }

  /** The token id this connection authenticated with (revocation closes it). */
  get tokenId(): string | undefined {
    return this.principal?.id;
  }

  private received(chunk: Buffer): void {
    if (this.state === 'closing') return;
    if (!this.firstByteSeen) {
      this.firstByteSeen = true;
      if (chunk[0] === TLS_HANDSHAKE_BYTE) {
        this.fail(new MercuryError('BAD_REQUEST', 'a TLS handshake on the plaintext wire port: use a mercury+tcp:// URL, or start the node with --tls-cert, --tls-key and --tls-ca'));
        return;
      }
    }
    this.lastActivityMs = this.context.nowMs();
    this.reader.push(chunk);
    this.pump();
  }

  /** Handles the frames that are in, as far as the bounds allow, and reads the socket again only within them. */
  private pump(): void {
    while (this.state !== 'closing' && !this.overBounds()) {
      let frame: WireFrame | OversizedFrame | WireFrameHead | undefined;
      try {
        frame = this.reader.next();
      } catch (error) {
        this.fail(error);
        return;
      }
      if (frame === undefined) break;
      if ('oversized' in frame) this.oversized(frame);
      else if ('head' in frame) this.head(frame);
      else this.handle(frame);
    }
    if (this.state === 'closing') return;
    const blocked = this.overBounds();
    if (blocked !== this.blocked) {
      this.blocked = blocked;
      if (blocked) this.socket.pause();
      else this.socket.resume();
    }
    // Each frame has frameTimeoutMs from its own first byte: the clock of one that ended does not run on into the
    // next, or a client whose every write ends part-way into its next frame (any pipelining client) would be cut off
    // frameTimeoutMs after its first partial write, however fast each frame came.
    if (this.reader.framesEnded !== this.framesEnded) {
      this.framesEnded = this.reader.framesEnded;
      this.partialSinceMs = undefined;
    }
    // A frame left waiting while the node does not read is not the client's delay.
    this.partialSinceMs = blocked || this.reader.partialBytes === 0 ? undefined : (this.partialSinceMs ?? this.context.nowMs());
  }

  private overBounds(): boolean {
    return this.inFlight >= this.context.limits.inFlightPerConnectionMax || this.outputFull() || this.readsWoken.length > 0;
  }

  /** Past its own output bound, or past its share of the port's while the port or its host is past its budget. */
  private outputFull(): boolean {
    return this.outputBytes > this.context.limits.outputBytesMax || this.portOutputFull(0);
  }

  /**
   * Whether `bytes` more of answers would take this connection past its share of the port's output budget, and the
   * port past the budget or this connection's host past its part of it (`outputBytesPerAddressMax`, record 81: one
   * host's connections that read nothing would otherwise take the budget whole, and every other client's large reads
   * be refused). The sums are taken only past the share: a client that takes its answers never pays them. An answer
   * larger than the budget (a node whose --max-value-bytes is near it) still goes out alone, when the port (or the
   * host) holds nothing else.
   */
  private portOutputFull(bytes: number): boolean {
    const { limits } = this.context;
    if (this.outputBytes + bytes <= wireOutputShareBytes(limits)) return false;
    const portBytes = this.context.portOutputBytes();
    if (portBytes > 0 && portBytes + bytes > limits.outputBytesTotalMax) return true;
    const addressBytes = this.context.addressOutputBytes();
    return addressBytes > 0 && addressBytes + bytes > limits.outputBytesPerAddressMax;
  }

  private oversized(frame: OversizedFrame): void {
    if (this.state === 'hello') {
      this.fail(new MercuryError('BAD_REQUEST', `the first frame must be HELLO (at most ${WIRE_HELLO_FRAME_BYTES_MAX} bytes); got ${frame.length} bytes of type 0x${frame.type.toString(16)}`));
      return;
    }
    const limit = this.context.frameBytesMax;
    const valueBytesMax = this.context.node.valueBytesMax;
    const error =
      frame.type === WireFrameType.PUT
        ? new MercuryError(
            'VALUE_TOO_LARGE',
            `PUT frame ${frame.id} is ${frame.length} bytes, over this node's frame limit of ${limit}: its value is larger than ${valueBytesMax} bytes, the most this node accepts (server option --max-value-bytes)`,
            { details: { limit: valueBytesMax } },
          )
        : smallFrameTooLarge(frame);
    this.refuse(frame.id, error);
  }

  /**
   * A frame longer than the largest GET, judged from its header before it is gathered: only a PUT may be that long,
   * from a token that may write somewhere, and it reserves its length in the node's body budget now, as an HTTP body
   * does from its Content-Length. A frame may take frameTimeoutMs to arrive: gathered outside the budget, 32 frames
   * of 16 MiB took a node from 60 to 748 MiB while the budget said 0 (audit, 2026-12-06).
   */
  private head(frame: WireFrameHead): void {
    try {
      if (frame.type !== WireFrameType.PUT) throw smallFrameTooLarge(frame);
      requireSomeWriteScope(this.currentPrincipal(), 'put a key');
      const budget = this.context.node.bodyBudget;
      if (!budget.tryReserve(frame.length, this.context.address)) throw budget.refusal(frame.length, this.context.address);
      this.frameReservedBytes = frame.length;
    } catch (error) {
      this.reader.drop();
      this.refuse(frame.id, error);
    }
  }

  /** A frame refused from its header (its bytes are dropped): answered to its id, or a connection error for id 0. */
  private refuse(id: number, error: unknown): void {
    if (id === 0) {
      this.fail(error);
      return;
    }
    this.context.counts.requests++;
    this.inFlight++;
    this.answerError(id, error);
  }

  private releaseFrameReservation(): void {
    if (this.frameReservedBytes === 0) return;
    this.context.node.bodyBudget.release(this.frameReservedBytes, this.context.address);
    this.frameReservedBytes = 0;
  }

  private handle(frame: WireFrame): void {
    // What this frame reserved at its head (only a PUT does): its request holds it from here.
    const reservedBytes = this.frameReservedBytes;
    this.frameReservedBytes = 0;
    let request: WireRequest;
    try {
      request = decodeRequest(frame);
    } catch (error) {
      this.context.node.bodyBudget.release(reservedBytes, this.context.address);
      this.fail(error);
      return;
    }
    if (this.state === 'hello') {
      this.hello(request);
      return;
    }
    if (request.type === WireFrameType.HELLO) {
      this.fail(new MercuryError('BAD_REQUEST', 'HELLO was already answered on this connection; send it once, first'));
      return;
    }
    this.context.counts.requests++;
    this.inFlight++;
    try {
      if (request.type === WireFrameType.GET) this.get(request);
      else if (request.type === WireFrameType.PUT) this.track(request.id, this.put(request, WIRE_HEADER_BYTES + frame.body.length, reservedBytes));
      else this.track(request.id, this.delete(request));
    } catch (error) {
      this.answerError(request.id, error);
    }
  }

  private hello(request: WireRequest): void {
    if (request.type !== WireFrameType.HELLO) {
      this.fail(new MercuryError('BAD_REQUEST', `the first frame must be HELLO, got frame type 0x${request.type.toString(16)}`));
      return;
    }
    if (request.version !== WIRE_PROTOCOL_VERSION) {
      this.fail(new MercuryError('BAD_REQUEST', `wire protocol version ${request.version} is not spoken here; this node speaks ${WIRE_PROTOCOL_VERSION}: use a client of the same release`));
      return;
    }
    try {
      this.principal = this.context.node.authenticate(request.token, this.socket);
    } catch (error) {
      this.fail(error);
      return;
    }
    this.token = request.token;
    this.state = 'open';
    this.reader.setLimit(this.context.frameBytesMax, WIRE_SMALL_FRAME_BYTES_MAX);
    this.queue(encodeReady(this.context.limits.inFlightPerConnectionMax, this.context.frameBytesMax));
  }

  /**
   * Its token's grant changed: the connection ends (ERROR, id 0) if what it authenticated with no longer stands. If it
   * does (new scopes, same secret), each read parked on minSeq whose key the new scopes do not read is answered
   * PERMISSION_DENIED now: it used to stay parked until it woke or timed out (up to 60 s), holding its place.
   */
  recheck(): void {
    if (this.state !== 'open') return;
    let principal: Principal | undefined;
    try {
      principal = this.currentPrincipal();
    } catch (error) {
      this.fail(error);
      return;
    }
    for (const read of this.parked) {
      try {
        requireRead(principal, read.key);
      } catch (error) {
        read.refused.abort(error);
      }
    }
  }

  /**
   * The principal for this request: re-checked each time, so a revoked token, or one whose credential was replaced,
   * stops at once (as on HTTP).
   */
  private currentPrincipal(): Principal | undefined {
    this.principal = this.context.node.current(this.principal);
    return this.principal;
  }

  private get(request: Extract<WireRequest, { type: typeof WireFrameType.GET }>): void {
    const { id, key, minSeq } = request;
    // Also for reads: LMDB throws on keys longer than it supports, and such a key can never exist anyway.
    validateKey(key);
    requireRead(this.currentPrincipal(), key);
    // Checked whether or not the read waits, as HTTP checks `timeoutMs`: the same read gets the same answer.
    const timeoutMs = request.minSeqTimeoutMs ?? MIN_SEQ_WAIT_MS_DEFAULT;
    if (timeoutMs > MIN_SEQ_WAIT_MS_MAX) throw new MercuryError('INVALID_ARGUMENT', `minSeqTimeoutMs must be between 0 and ${MIN_SEQ_WAIT_MS_MAX}, got ${timeoutMs}`);
    const store = this.context.node.store;
    if (minSeq !== undefined && minSeq > store.head().seq) {
      const read = { key, refused: new AbortController() };
      if (this.gone.signal.aborted) read.refused.abort(this.gone.signal.reason);
      this.parked.add(read);
      this.context.node.waitForSeq(minSeq, timeoutMs, read.refused.signal).then(
        () => {
          this.parked.delete(read);
          this.readsWoken.push({ id, key });
          this.readWoken();
        },
        (error: unknown) => {
          this.parked.delete(read);
          this.answerError(id, error);
        },
      );
      return;
    }
    if (!this.answerRead(id, key)) this.readsWoken.push({ id, key });
  }

  /** Answers the woken reads while the output is within its bound; the rest wait for the socket to drain. */
  private readWoken(): void {
    while (this.readsWoken.length > 0 && !this.outputFull() && !this.socket.destroyed) {
      const { id, key } = this.readsWoken[0]!;
      try {
        // The token may have been revoked, or narrowed, while the read waited: checked again before it is answered.
        requireRead(this.currentPrincipal(), key);
        // Still no room in the port's budget: read again when more of this connection's answers are taken.
        if (!this.answerRead(id, key)) return;
      } catch (error) {
        this.answerError(id, error);
      }
      this.readsWoken.shift();
    }
  }

  /**
   * Reads `key` and queues its answer, unless it would take the port past its output budget: then the answer is
   * dropped at once (queueing it would let each connection that reads nothing hold one more answer of the largest
   * value, 16 MiB, budget or not) and false is returned: the read waits in `readsWoken` (a client pipelining reads is
   * held back, not refused) until this connection's answers are taken, or the sweep refuses it (`refuseReadsWaiting`).
   * Once the sweep refused some, a read that finds no room with nothing of this connection on its way is refused here.
   */
  private answerRead(id: number, key: Buffer): boolean {
    const frame = this.read(id, key);
    if (this.portOutputFull(frame.length)) {
      if (this.refusingWhilePortFull && !this.answersOnTheirWay()) throw this.portOutputFullError();
      return false;
    }
    this.refusingWhilePortFull = false;
    this.answer(frame);
    return true;
  }

  /** A flush or a 'drain' is to come, which reads again the reads that wait for room. */
  private answersOnTheirWay(): boolean {
    return this.outBytes > 0 || this.socket.writableNeedDrain;
  }

  private portOutputFullError(): MercuryError {
    const { outputBytesTotalMax, outputBytesPerAddressMax } = this.context.limits;
    // A read that waited is refused without its answer's size at hand: named is whichever is fuller for its limit.
    if (this.context.addressOutputBytes() / outputBytesPerAddressMax > this.context.portOutputBytes() / outputBytesTotalMax)
      return new MercuryError(
        'OVERLOADED',
        `the wire connections of your address (${this.context.address}) hold ${this.context.addressOutputBytes()} bytes of answers not read yet, and one address may hold at most ${outputBytesPerAddressMax}: read the answers on your other connections, then retry`,
        { details: { reason: 'ADDRESS_SHARE_FULL', limit: outputBytesPerAddressMax } },
      );
    return new MercuryError(
      'OVERLOADED',
      `the wire port holds ${this.context.portOutputBytes()} bytes of answers its clients have not read and queues at most ${outputBytesTotalMax}; retry later`,
      { details: { reason: 'WIRE_OUTPUT_FULL', limit: outputBytesTotalMax } },
    );
  }

  /**
   * Reads that wait for room in the port's output budget while this connection has no answer on its way, so that no
   * flush or 'drain' of its own will come to read them: the port is full of other clients' answers. Read now if there
   * is room, else refused OVERLOADED (WIRE_OUTPUT_FULL), at most a sweep after they began to wait.
   */
  private refuseReadsWaiting(): void {
    if (this.readsWoken.length === 0 || this.answersOnTheirWay()) return;
    this.readWoken();
    if (this.readsWoken.length === 0) return;
    this.refusingWhilePortFull = true;
    for (const { id } of this.readsWoken.splice(0)) this.answerError(id, this.portOutputFullError());
    if (this.blocked) this.pump();
  }

  /** The answer to a GET: the record encoded straight from LMDB's read buffer into the frame (no copy in between). */
  private read(id: number, key: Buffer): Buffer {
    const seq = this.context.node.store.visit(key, VALUE_FRAMES);
    return VALUE_FRAMES.take(id, seq);
  }

  /**
   * A PUT holds its frame's length in the body budget until answered: reserved at its head when it was large
   * (`reservedBytes`), else here, once the key and scope are checked.
   */
  private async put(request: Extract<WireRequest, { type: typeof WireFrameType.PUT }>, frameBytes: number, reservedBytes: number): Promise<Buffer> {
    const { id, key, value, ifModSeq } = request;
    const node = this.context.node;
    let heldBytes = reservedBytes;
    try {
      validateKey(key);
      if (value.length > node.valueBytesMax) throw valueTooLarge(value.length, node.valueBytesMax);
      const principal = this.currentPrincipal();
      requireKeyWrite(principal, key, ifModSeq !== undefined);
      if (heldBytes === 0) {
        if (!node.bodyBudget.tryReserve(frameBytes, this.context.address)) throw node.bodyBudget.refusal(frameBytes, this.context.address);
        heldBytes = frameBytes;
      }
      const result = await node.write(putRequest(key, value, ifModSeq), this.caller(principal));
      if (!result.succeeded) throw compareFailed(node.store, key, ifModSeq!, result.seq);
      return encodeWritten(id, result.seq, false);
    } finally {
      node.bodyBudget.release(heldBytes, this.context.address);
    }
  }

  private async delete(request: Extract<WireRequest, { type: typeof WireFrameType.DELETE }>): Promise<Buffer> {
    const { id, key, ifModSeq } = request;
    validateKey(key);
    const node = this.context.node;
    const principal = this.currentPrincipal();
    requireKeyWrite(principal, key, ifModSeq !== undefined);
    const result = await node.write(deleteRequest(key, ifModSeq), this.caller(principal));
    if (!result.succeeded && ifModSeq !== undefined) throw compareFailed(node.store, key, ifModSeq, result.seq);
    return encodeWritten(id, result.seq, result.succeeded);
  }

  /** Who the write is for: the author the entry records, and the token a replica forwards to its upstream. */
  private caller(principal: Principal | undefined): WriteCaller {
    return { author: principal?.name, authorization: this.token === undefined ? undefined : `Bearer ${this.token}`, gone: () => this.gone.signal };
  }

  private track(id: number, answer: Promise<Buffer>): void {
    answer.then(
      (frame) => this.answer(frame),
      (error: unknown) => this.answerError(id, error),
    );
  }

  private answer(frame: Buffer): void {
    this.inFlight--;
    this.queue(frame);
  }

  private answerError(id: number, error: unknown): void {
    this.inFlight--;
    this.context.counts.errors++;
    this.queue(this.errorFrame(id, error));
  }

  private errorFrame(id: number, error: unknown): Buffer {
    if (isMercuryError(error)) return encodeError(id, error.code, error.message, error.details);
    this.context.node.log('internal error on the wire port', { error: String((error as Error)?.stack ?? error) });
    return encodeError(id, 'INTERNAL', 'internal error; see the node log');
  }

  private queue(frame: Buffer): void {
    if (this.socket.destroyed) return;
    this.out.push(frame);
    this.outBytes += frame.length;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /** Writes every queued answer at once (one system call for small ones), then reads on if the bounds allow. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.out.length > 0 && !this.socket.destroyed) {
      if (this.out.length === 1) this.socket.write(this.out[0]!);
      else if (this.outBytes <= 64 * 1024) this.socket.write(Buffer.concat(this.out, this.outBytes));
      else {
        this.socket.cork();
        for (const frame of this.out) this.socket.write(frame);
        this.socket.uncork();
      }
    }
    this.out.length = 0;
    this.outBytes = 0;
    // A write the kernel took at once emits no 'drain': the room it left is used here.
    this.readWoken();
    if (this.state === 'closing') {
      // Answers of woken reads just queued go out first, with the next flush.
      if (this.inFlight === 0 && this.out.length === 0 && this.finalFrame !== undefined && !this.socket.destroyed) {
        this.socket.end(this.finalFrame);
        this.finalFrame = undefined;
      }
      return;
    }
    if (this.blocked) this.pump();
  }

  /**
   * A connection error: every request read before it is still answered, then the ERROR (id 0), then the close; nothing
   * more is read. A client takes every request unanswered at the ERROR as not processed.
   */
  fail(error: unknown): void {
    if (this.state === 'closing') return;
    this.context.counts.connectionErrors++;
    // The reads parked on minSeq end now, answered with this error (a revoked token's UNAUTHENTICATED): the final
    // ERROR waits for every request in flight, so they held their places among the node's parked reads until the
    // close gave up on them (frameTimeoutMs, 30 s).
    this.gone.abort(error);
    this.close(this.errorFrame(0, error));
  }

  /** Closes with GOAWAY once the requests in flight are answered (node shutdown, idle). */
  goAway(): void {
    if (this.state === 'closing') return;
    this.close(encodeGoaway());
  }

  private close(last: Buffer): void {
    this.state = 'closing';
    // Nothing more is read: a frame partly in will not be whole.
    this.releaseFrameReservation();
    this.closingSinceMs = this.context.nowMs();
    this.socket.pause();
    // Sent by the flush that finds nothing in flight: after the answer to every request read before it.
    this.finalFrame = last;
    this.scheduleFlush();
  }

  /** Called by the server's sweep: enforces the HELLO, frame and idle timeouts, and bounds a close that does not flush. */
  sweep(nowMs: number): void {
    const { helloTimeoutMs, frameTimeoutMs, idleTimeoutMs } = this.context.limits;
    if (this.state === 'closing') {
      if (this.closingSinceMs !== undefined && nowMs - this.closingSinceMs > frameTimeoutMs) this.socket.destroy();
      return;
    }
    if (this.state === 'hello' && nowMs - this.openedMs > helloTimeoutMs) {
      this.fail(new MercuryError('REQUEST_TIMEOUT', `no HELLO within ${helloTimeoutMs} ms of connecting; send HELLO first`));
      return;
    }
    if (!this.blocked && this.partialSinceMs !== undefined && nowMs - this.partialSinceMs > frameTimeoutMs) {
      this.fail(new MercuryError('REQUEST_TIMEOUT', `a frame was not received in full within ${frameTimeoutMs} ms; send each frame promptly`));
      return;
    }
    this.refuseReadsWaiting();
    // Woken reads wait only for the client to take its answers: a client that stops reading is idle, and goes.
    if (this.inFlight === this.readsWoken.length && this.partialSinceMs === undefined && nowMs - this.lastActivityMs > idleTimeoutMs) this.goAway();
  }
}
