/**
 * The server side of RFC 6455 for `/v1/watch`, written for what an idle watcher costs: one small object per
 * connection and the listeners shared by all (the connection is found on its socket). `ws` kept a WebSocket, a
 * Receiver (a Writable stream with its own state and listeners), a Sender and a closure per connection, about 1.2 KiB
 * of heap per watcher that sat unused between messages (docs/decisions.md, record 34). The client side stays on `ws`.
 *
 * What this end speaks:
 * - Handshake (section 4.2): GET with `Upgrade: websocket`, a 16-byte base64 `Sec-WebSocket-Key` and version 13 (or
 *   8, as `ws` accepts); the first offered subprotocol is echoed, as `ws` did; no extension is ever accepted
 *   (compression would cost tens of KiB of zlib state per connection).
 * - Frames from the client (section 5.2): masked, RSV bits clear, known opcodes; control frames final and at most 125
 *   bytes; a message (all its fragments) at most `messageBytesMax`, refused as soon as a header announces more, so no
 *   more than that is ever buffered; text must be UTF-8. Violations close with 1002, 1009 or 1007.
 * - Pings are answered with a pong carrying their payload, unless the send queue is full. The hub pings a quiet
 *   connection (`ping`) and closes one from which nothing, pongs included, arrived for long (`heardMs`).
 * - Closing (section 7): either side sends a close frame; the other answers with one; then the server ends the TCP
 *   connection. A peer that does not answer within `closeTimeoutMs` is cut off.
 * - A frame, or a message of fragments, must arrive in full within `frameTimeoutMs` of its first byte, else 1008.
 *
 * Nothing is allocated for an idle connection: the bytes of a frame not yet received in full, and the fragments of a
 * message, are held only while they are incomplete, in buffers grown as bytes arrive (growBuffer), never at the length
 * a header announces. An idle watcher sends nothing for hours, so the socket has no idle timeout; what bounds an
 * incomplete message is its deadline. Without one (audit of 2026-12-06) a peer held each connection's partial frame
 * forever: 2,000 connections of one almost complete 128 KiB frame each took 274 MiB of the node's memory, and a
 * header announcing 128 KiB, with nothing after it, made the node allocate the 128 KiB at once.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { isUtf8 } from 'node:buffer';
import type { Duplex } from 'node:stream';
import type { Clock, TimerHandle } from '../clock/index.js';
import { growBuffer } from '../api/grow.js';
import { hostSlotKey } from '../net/index.js';
import { controlFrame, firstFragmentFrame, lastFragmentHeader, Opcode, textFrame } from './frame.js';

/** RFC 6455 section 1.3: appended to the client's key, hashed with SHA-1, answered in base64. */
const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** 16 random bytes in base64. */
const KEY_PATTERN = /^[+/0-9A-Za-z]{22}==$/;
/** A subprotocol is an HTTP token (RFC 7230 section 3.2.6). */
const TOKEN_PATTERN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Control frames carry at most 125 bytes; a close frame's reason is what is left after its 2-byte code. */
const CONTROL_PAYLOAD_BYTES_MAX = 125;
/**
 * The first buffer of a frame received in pieces, or of a fragmented message (doubled as bytes arrive): small, as
 * client messages are (a subscribe is a few hundred bytes).
 */
const GATHER_BUFFER_BYTES_MIN = 256;
/** The server's pings carry nothing: one frame, shared by every connection. */
const PING_FRAME = controlFrame(Opcode.PING, Buffer.alloc(0));

/** Close codes of RFC 6455 section 7.4.1 this end sends on its own (the watch protocol's are in src/api/watch.ts). */
export const ProtocolCloseCode = {
  NORMAL: 1000,
  PROTOCOL_ERROR: 1002,
  NO_STATUS: 1005,
  INVALID_PAYLOAD: 1007,
  /** A frame or message that did not arrive in full within `frameTimeoutMs`. */
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  /** The node holds its most bytes of incomplete messages (`heldBudget`): try again later. */
  TRY_AGAIN_LATER: 1013,
} as const;

/**
 * A node-wide budget of bytes (the node's request-body budget, src/server/body-budget.ts): what each connection holds of
 * incomplete frames and messages is reserved in it. Without it, the 30 s deadline bounded how long partial frames were
 * held, not how much: one address could hold 4,000 connections x 128 KiB (512 MiB), the node 19,236 of them.
 */
export interface HeldBytesBudget {
  readonly bytesMax: number;
  readonly bytesInFlight: number;
  /** Reserves `bytes` for the remote host `address` if they fit its share and the budget; false (nothing reserved) if not. */
  tryReserve(bytes: number, address: string): boolean;
  release(bytes: number, address: string): void;
}

/** Why an upgrade request is not a WebSocket handshake this end accepts. */
export interface HandshakeRefusal {
  readonly status: 400 | 405;
  readonly message: string;
  /** Header lines to add to the answer, each ending in CRLF. */
  readonly headers?: string;
}

/** What a valid handshake asks for: the accept value to answer, and the subprotocol to echo (if any). */
export interface Handshake {
  readonly accept: string;
  readonly protocol: string | undefined;
}

/** Checks an upgrade request as RFC 6455 section 4.2.1 asks (and as `ws` did, with the same statuses). */
export function readHandshake(req: IncomingMessage): Handshake | HandshakeRefusal {
  if (req.method !== 'GET') return { status: 405, message: 'a WebSocket handshake is a GET request' };
  const upgrade = req.headers.upgrade;
  if (upgrade === undefined || upgrade.toLowerCase() !== 'websocket') return { status: 400, message: 'the Upgrade header must be websocket' };
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !KEY_PATTERN.test(key)) return { status: 400, message: 'missing or invalid Sec-WebSocket-Key header (16 bytes in base64)' };
  const version = Number(req.headers['sec-websocket-version']);
  // The versions this end speaks go back in the answer (section 4.4), so a client can retry with one of them.
  if (version !== 13 && version !== 8) return { status: 400, message: 'missing or invalid Sec-WebSocket-Version header (13)', headers: 'sec-websocket-version: 13, 8\r\n' };
  let protocol: string | undefined;
  const offered = req.headers['sec-websocket-protocol'];
  if (offered !== undefined) {
    const names = offered.split(',').map((name) => name.trim());
    if (!names.every((name) => TOKEN_PATTERN.test(name))) return { status: 400, message: 'invalid Sec-WebSocket-Protocol header' };
    protocol = names[0];
  }
  return { accept: createHash('sha1').update(key + ACCEPT_GUID).digest('base64'), protocol };
}

/** The 101 answer to a handshake `readHandshake` accepted. */
export function handshakeResponse(handshake: Handshake): string {
  const protocol = handshake.protocol === undefined ? '' : `sec-websocket-protocol: ${handshake.protocol}\r\n`;
  return `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${handshake.accept}\r\n${protocol}\r\n`;
}

/** One frame header read from the wire, or why the frame is refused. */
export type FrameHeader =
  | { readonly ok: true; readonly fin: boolean; readonly opcode: number; readonly headerBytes: number; readonly payloadBytes: number }
  | { readonly ok: false; readonly code: number; readonly message: string };

/**
 * Reads the header of a client frame at `at`: undefined while it is incomplete. `messageBytesMax` bounds a data
 * frame's payload together with the `heldBytes` of earlier fragments of its message, so a frame announcing more is
 * refused before its payload arrives, with a reason that names the limit (not what was left of it).
 */
export function readFrameHeader(data: Buffer, at: number, messageBytesMax: number, heldBytes = 0): FrameHeader | undefined {
  const available = data.length - at;
  if (available < 2) return undefined;
  const first = data[at]!;
  const second = data[at + 1]!;
  const fin = (first & 0x80) !== 0;
  const opcode = first & 0x0f;
  if ((first & 0x70) !== 0) return { ok: false, code: ProtocolCloseCode.PROTOCOL_ERROR, message: 'RSV bits set without a negotiated extension' };
  if ((second & 0x80) === 0) return { ok: false, code: ProtocolCloseCode.PROTOCOL_ERROR, message: 'client frames must be masked' };
  const control = opcode >= 0x8;
  if (control ? opcode > Opcode.PONG : opcode > Opcode.BINARY) return { ok: false, code: ProtocolCloseCode.PROTOCOL_ERROR, message: `unknown opcode ${opcode}` };
  let payloadBytes = second & 0x7f;
  let headerBytes = 2;
  if (control && (!fin || payloadBytes > CONTROL_PAYLOAD_BYTES_MAX))
    return { ok: false, code: ProtocolCloseCode.PROTOCOL_ERROR, message: 'control frames must be final and at most 125 bytes' };
  if (payloadBytes === 126) {
    if (available < 4) return undefined;
    payloadBytes = data.readUInt16BE(at + 2);
    headerBytes = 4;
  } else if (payloadBytes === 127) {
    if (available < 10) return undefined;
    // Anything past 32 bits is far beyond the limit: refused without building the 64-bit number.
    payloadBytes = data.readUInt32BE(at + 2) === 0 ? data.readUInt32BE(at + 6) : Infinity;
    headerBytes = 10;
  }
  if (!control && payloadBytes > messageBytesMax - heldBytes) {
    const fragments = heldBytes === 0 ? '' : ` (${heldBytes} bytes of it in earlier fragments)`;
    return { ok: false, code: ProtocolCloseCode.MESSAGE_TOO_BIG, message: `message larger than ${messageBytesMax} bytes${fragments}` };
  }
  return { ok: true, fin, opcode, headerBytes: headerBytes + 4, payloadBytes };
}

/** Close codes a peer may send (RFC 6455 section 7.4): the defined ones it may put on the wire, and 3000-4999. */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/** What a server WebSocket reports (the hub); one object for every connection. */
export interface ServerWebSocketOwner {
  readonly clock: Clock;
  /** How long a peer has to answer a close frame before its TCP connection is destroyed. */
  readonly closeTimeoutMs: number;
  /** How long a frame, or a message of fragments, may take to arrive in full from its first byte (else 1008). */
  readonly frameTimeoutMs: number;
  /** The largest client message, all its fragments together. */
  readonly messageBytesMax: number;
  /** Where held bytes of incomplete messages are reserved (undefined: not counted, for a hub without a node). */
  readonly heldBudget?: HeldBytesBudget;
  /**
   * Pings are not answered while this much is queued on the socket: a peer that sends pings and does not read would
   * otherwise grow the queue without bound (the watch machine's `queueBytesMax`).
   */
  readonly queueBytesMax: number;
  message(socket: ServerWebSocket, data: Buffer, isBinary: boolean): void;
  /** The socket's send queue was handed to the kernel. */
  drained(socket: ServerWebSocket): void;
  /** The TCP connection is gone; nothing is reported after it. */
  closed(socket: ServerWebSocket): void;
  /** The peer broke the protocol (the close code is sent already) or the socket failed. */
  failed(socket: ServerWebSocket, message: string, code: number | string | undefined): void;
}

const OPEN = 0;
/** A close frame was sent: data messages are ignored, the peer's close frame is awaited. */
const CLOSING = 1;
/** The close handshake is over or the connection failed: nothing more is read or sent. */
const CLOSED = 2;

const WEBSOCKET = Symbol('server websocket');
type OwnedSocket = Duplex & { [WEBSOCKET]?: ServerWebSocket };

/**
 * One accepted WebSocket on its TCP (or TLS) socket. The hub subclasses it with what it keeps per watcher, so that a
 * watcher is one object besides its socket.
 */
export class ServerWebSocket {
  private state = OPEN;
  private written = 0;
  /**
   * A frame not yet received in full (never more than a header and `messageBytesMax`), its first `partialFilled`
   * bytes: while its header is incomplete, the few bytes received (`partialFrameBytes` 0); once the header is read,
   * a buffer grown by doubling as bytes arrive, up to the frame's `partialFrameBytes`. Each byte is copied a bounded
   * number of times however the peer splits the frame (no copy of everything so far per byte, no object per byte),
   * and the buffer is at most twice what arrived: a header announcing 128 KiB costs what came after it.
   */
  private partial: Buffer | undefined = undefined;
  private partialFilled = 0;
  private partialFrameBytes = 0;
  /**
   * The payload so far of a message whose final frame has not come (`fragmentBytes` of `fragments`), and its opcode
   * (0: no message in progress). One buffer, grown by doubling up to `messageBytesMax`, whatever the number of
   * fragments: a message sent as 1-byte fragments held one Buffer object (some 140 bytes of heap) per byte, 18 MB per
   * connection for a message limited to 128 KiB.
   */
  private fragments: Buffer | undefined = undefined;
  private fragmentBytes = 0;
  private fragmentOpcode = 0;
  /**
   * When the first byte of the frame or message not yet received in full arrived (undefined: none is), and the timer
   * that checks it against `frameTimeoutMs`. The timer is armed once and, when it finds the frame it was armed for
   * completed, re-armed for the one that followed: a client whose every write ends part-way into its next frame
   * (any pipelining client) costs no timer per frame, and each frame still has the whole deadline from its own start.
   */
  private incompleteSinceMs: number | undefined = undefined;
  private deadlineTimer: TimerHandle | undefined = undefined;
  /** Bytes of `partial` and `fragments` reserved in the owner's `heldBudget`. */
  private reservedBytes = 0;
  private closeTimer: TimerHandle | undefined = undefined;
  /** The remote host its reservations count under (`hostSlotKey`, record 81). */
  private readonly address: string;
  /**
   * When bytes last arrived from the peer, or the kernel took the whole send queue ('drain': the peer acknowledged
   * what filled its window), on the owner's monotonic clock: the hub closes a connection silent too long (its peer
   * vanished) and pings one that is quiet (src/watch/machine.ts, `silent`).
   */
  heardMs: number;

  constructor(
    readonly owner: ServerWebSocketOwner,
    readonly socket: Duplex,
  ) {
    this.address = hostSlotKey((socket as Partial<Socket>).remoteAddress);
    this.heardMs = owner.clock.monotonicMs();
  }

  /**
   * Starts serving on `socket` once the 101 answer is written: `head` is what the client sent after its request.
   * Listeners are shared functions that find this object on the socket (no closure per connection).
   */
  start(head: Buffer): void {
    const socket = this.socket as OwnedSocket;
    socket[WEBSOCKET] = this;
    const tcp = socket as Partial<Socket>;
    tcp.setTimeout?.(0);
    tcp.setNoDelay?.(true);
    /* eslint-disable @typescript-eslint/unbound-method -- the emitter calls each with the socket as `this` */
    socket.on('data', ServerWebSocket.onData);
    socket.on('end', ServerWebSocket.onEnd);
    socket.on('close', ServerWebSocket.onClose);
    socket.on('error', ServerWebSocket.onError);
    socket.on('drain', ServerWebSocket.onDrain);
    /* eslint-enable @typescript-eslint/unbound-method */
    if (head.length > 0) this.received(Buffer.from(head));
  }

  get isOpen(): boolean {
    return this.state === OPEN;
  }

  /** Bytes written and not yet handed to the kernel. */
  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  /**
   * Bytes written since the WebSocket began, taken by the kernel or not: less `bufferedBytes`, how far the kernel has
   * taken them, which tells the watch machine when a socket no longer holds a shared body.
   */
  get writtenBytes(): number {
    return this.written;
  }

  /** Every frame this end writes goes through here, so that `writtenBytes` counts it. */
  private write(chunk: Buffer): void {
    this.written += chunk.length;
    this.socket.write(chunk);
  }

  /** One text message. */
  send(text: string): void {
    if (this.state === OPEN) this.write(textFrame(Buffer.from(text, 'utf8')));
  }

  /** One complete frame made by frame.ts (the same Buffer goes to many sockets). */
  sendFramed(frame: Buffer): void {
    if (this.state === OPEN) this.write(frame);
  }

  /** One text message in two fragments: the head, then the shared body (written without a copy of it). */
  sendFragments(head: string, body: Buffer): void {
    if (this.state !== OPEN) return;
    // The body is one buffer shared by every socket the message goes to: its frame header goes apart, corked with it
    // into one writev, so that a socket that cannot take it holds the shared body, not a copy. Framed whole per
    // socket, 250 watchers reading nothing held 262 MB of one 1 MiB event (the fairness audit, 2026-12-07).
    this.socket.cork();
    this.write(firstFragmentFrame(Buffer.from(head, 'utf8')));
    this.write(lastFragmentHeader(body.length));
    this.write(body);
    this.socket.uncork();
  }

  /** A ping with no payload: a peer that is there answers with a pong, and so moves `heardMs`. */
  ping(): void {
    if (this.state === OPEN) this.write(PING_FRAME);
  }

  /** Starts the close handshake with `code` and `reason` (cut to fit a control frame). */
  close(code: number, reason: string): void {
    if (this.state !== OPEN) return;
    this.state = CLOSING;
    this.write(closeFrame(code, reason));
    this.armCloseTimer();
  }

  private armCloseTimer(): void {
    this.closeTimer ??= this.owner.clock.setTimeout(() => this.socket.destroy(), this.owner.closeTimeoutMs);
  }

  /** The peer broke the protocol: the close code goes out, nothing more is read, and the connection ends. */
  private fail(code: number, message: string): void {
    if (this.state === OPEN) this.write(closeFrame(code, message));
    this.endConnection();
    this.owner.failed(this, message, code);
  }

  /** Nothing more is read or sent: what is held goes, the TCP connection ends, and is cut off if the peer lingers. */
  private endConnection(): void {
    this.state = CLOSED;
    this.releaseHeld();
    this.socket.end();
    this.armCloseTimer();
  }

  private releaseHeld(): void {
    this.partial = undefined;
    this.fragments = undefined;
    this.incompleteSinceMs = undefined;
    this.deadlineTimer?.cancel();
    this.deadlineTimer = undefined;
    this.owner.heldBudget?.release(this.reservedBytes, this.address);
    this.reservedBytes = 0;
  }

  /**
   * Brings the reservation in the owner's `heldBudget` to what `partial` and `fragments` hold now (their buffers'
   * lengths), once per read: a message that arrives whole in one read reserves nothing. What does not fit closes the
   * connection with 1013.
   */
  private reserveHeld(): void {
    const budget = this.owner.heldBudget;
    if (budget === undefined) return;
    const held = (this.partial?.length ?? 0) + (this.fragments?.length ?? 0);
    if (held < this.reservedBytes) budget.release(this.reservedBytes - held, this.address);
    else if (held > this.reservedBytes && !budget.tryReserve(held - this.reservedBytes, this.address))
      return this.fail(
        ProtocolCloseCode.TRY_AGAIN_LATER,
        `the node holds ${budget.bytesInFlight} bytes of incomplete messages and request bodies, or your address (${this.address}) its share of them; send each message whole, and reconnect later`,
      );
    this.reservedBytes = held;
  }

  /** Bytes from the socket: every whole frame is handled, and an incomplete one starts (or keeps) its deadline. */
  private received(chunk: Buffer): void {
    this.heardMs = this.owner.clock.monotonicMs();
    this.read(chunk);
    if (this.state !== OPEN) return;
    this.reserveHeld();
    if (this.state !== OPEN || (this.partial === undefined && this.fragmentOpcode === 0)) return;
    this.incompleteSinceMs ??= this.owner.clock.monotonicMs();
    this.deadlineTimer ??= this.owner.clock.setTimeout(() => this.checkDeadline(), this.owner.frameTimeoutMs);
  }

  private checkDeadline(): void {
    this.deadlineTimer = undefined;
    if (this.state !== OPEN || this.incompleteSinceMs === undefined) return;
    const { frameTimeoutMs } = this.owner;
    const waitedMs = this.owner.clock.monotonicMs() - this.incompleteSinceMs;
    if (waitedMs >= frameTimeoutMs)
      return this.fail(ProtocolCloseCode.POLICY_VIOLATION, `a message was not received in full within ${frameTimeoutMs} ms of its first byte; send each promptly`);
    // The frame this timer was armed for completed; another is under way since incompleteSinceMs.
    this.deadlineTimer = this.owner.clock.setTimeout(() => this.checkDeadline(), frameTimeoutMs - waitedMs);
  }

  private read(chunk: Buffer): void {
    if (this.state === CLOSED) return;
    const partial = this.partial;
    if (partial === undefined) return this.parse(chunk);
    if (this.partialFrameBytes === 0) {
      // Only part of a header so far (at most 13 bytes): joined with the chunk, parsed as one.
      this.partial = undefined;
      return this.parse(Buffer.concat([partial.subarray(0, this.partialFilled), chunk]));
    }
    const take = Math.min(chunk.length, this.partialFrameBytes - this.partialFilled);
    const held = growBuffer(partial, this.partialFilled, this.partialFilled + take, this.partialFrameBytes, GATHER_BUFFER_BYTES_MIN);
    chunk.copy(held, this.partialFilled, 0, take);
    this.partial = held;
    this.partialFilled += take;
    if (this.partialFilled < this.partialFrameBytes) return;
    this.partial = undefined;
    this.parse(held.subarray(0, this.partialFrameBytes));
    if (take < chunk.length) this.read(chunk.subarray(take));
  }

  /** Handles every whole frame in `data`; keeps an incomplete last one in `partial`. */
  private parse(data: Buffer): void {
    let at = 0;
    for (;;) {
      const header = readFrameHeader(data, at, this.owner.messageBytesMax, this.fragmentBytes);
      if (header === undefined) {
        // Copied, so that a few leftover bytes do not keep a whole read buffer alive.
        if (at < data.length) this.keepPartial(Buffer.from(data.subarray(at)), data.length - at, 0);
        return;
      }
      if (!header.ok) return this.fail(header.code, header.message);
      const end = at + header.headerBytes + header.payloadBytes;
      if (end > data.length) {
        // The header bounded the frame (refused above if over the limit); what is held is what arrived of it.
        const arrived = data.length - at;
        const frame = growBuffer(undefined, 0, arrived, end - at, GATHER_BUFFER_BYTES_MIN);
        data.copy(frame, 0, at);
        return this.keepPartial(frame, arrived, end - at);
      }
      const payload = data.subarray(at + header.headerBytes, end);
      const mask = data.subarray(at + header.headerBytes - 4, at + header.headerBytes);
      for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
      at = end;
      this.frame(header.fin, header.opcode, payload);
      if (this.state === CLOSED) return;
      // A whole message is in (or a control frame outside one): the next frame's deadline starts at its own first byte.
      if (this.fragmentOpcode === 0) this.incompleteSinceMs = undefined;
      if (at === data.length) return;
    }
  }

  /** `frameBytes`: the whole frame's length, or 0 while its header is incomplete. */
  private keepPartial(bytes: Buffer, filled: number, frameBytes: number): void {
    this.partial = bytes;
    this.partialFilled = filled;
    this.partialFrameBytes = frameBytes;
  }

  private frame(fin: boolean, opcode: number, payload: Buffer): void {
    switch (opcode) {
      case Opcode.PING:
        if (this.state === OPEN && this.socket.writableLength < this.owner.queueBytesMax) this.write(controlFrame(Opcode.PONG, payload));
        return;
      case Opcode.PONG:
        return;
      case Opcode.CLOSE:
        return this.closeReceived(payload);
      case Opcode.CONTINUATION:
        if (this.fragmentOpcode === 0) return this.fail(ProtocolCloseCode.PROTOCOL_ERROR, 'continuation frame without a message to continue');
        this.keepFragment(payload);
        if (!fin) return;
        opcode = this.fragmentOpcode;
        payload = this.fragments === undefined ? Buffer.alloc(0) : this.fragments.subarray(0, this.fragmentBytes);
        this.fragments = undefined;
        this.fragmentBytes = 0;
        this.fragmentOpcode = 0;
        break;
      default: // TEXT or BINARY
        if (this.fragmentOpcode !== 0) return this.fail(ProtocolCloseCode.PROTOCOL_ERROR, 'new message before the last one was finished');
        if (!fin) {
          this.fragmentOpcode = opcode;
          this.keepFragment(payload);
          return;
        }
    }
    if (opcode === Opcode.TEXT && !isUtf8(payload)) return this.fail(ProtocolCloseCode.INVALID_PAYLOAD, 'text message is not valid UTF-8');
    if (this.state === OPEN) this.owner.message(this, payload, opcode === Opcode.BINARY);
  }

  /** Appends a fragment's payload (a view of the read buffer: copied) to the message in progress. */
  private keepFragment(payload: Buffer): void {
    if (payload.length === 0) return;
    const bytes = this.fragmentBytes + payload.length;
    // readFrameHeader refused any fragment that would take the message past the limit.
    assert.ok(bytes <= this.owner.messageBytesMax, 'a message within its limit');
    // The limit is a ceiling, not an allocation: a short fragmented message costs what it is.
    const held = growBuffer(this.fragments, this.fragmentBytes, bytes, this.owner.messageBytesMax, GATHER_BUFFER_BYTES_MIN);
    this.fragments = held;
    payload.copy(held, this.fragmentBytes);
    this.fragmentBytes = bytes;
  }

  private closeReceived(payload: Buffer): void {
    if (payload.length === 1) return this.fail(ProtocolCloseCode.PROTOCOL_ERROR, 'close frame with a 1-byte payload');
    let code: number = ProtocolCloseCode.NO_STATUS;
    let reason = '';
    if (payload.length >= 2) {
      code = payload.readUInt16BE(0);
      if (!isValidCloseCode(code)) return this.fail(ProtocolCloseCode.PROTOCOL_ERROR, `invalid close code ${code}`);
      const reasonBytes = payload.subarray(2);
      if (!isUtf8(reasonBytes)) return this.fail(ProtocolCloseCode.INVALID_PAYLOAD, 'close reason is not valid UTF-8');
      reason = reasonBytes.toString('utf8');
    }
    // Echo the peer's code (section 5.5.1) unless this end has sent its own close frame already.
    if (this.state === OPEN) this.write(code === ProtocolCloseCode.NO_STATUS ? controlFrame(Opcode.CLOSE, Buffer.alloc(0)) : closeFrame(code, reason));
    this.endConnection();
  }

  // Function expressions (not arrows): the emitter calls them with the socket as `this`.
  private static readonly onData = function (this: OwnedSocket, chunk: Buffer): void {
    this[WEBSOCKET]!.received(chunk);
  };

  /** The peer ended its side without a close frame: end this side too (node:http sockets allow half-open). */
  private static readonly onEnd = function (this: OwnedSocket): void {
    const websocket = this[WEBSOCKET]!;
    websocket.state = CLOSED;
    this.end();
  };

  private static readonly onClose = function (this: OwnedSocket): void {
    const websocket = this[WEBSOCKET]!;
    websocket.state = CLOSED;
    websocket.closeTimer?.cancel();
    websocket.closeTimer = undefined;
    websocket.releaseHeld();
    websocket.owner.closed(websocket);
  };

  /** A socket error (a reset, a write after the peer left) ends in 'close', which node emits after it. */
  private static readonly onError = function (this: OwnedSocket, error: Error & { code?: string }): void {
    const websocket = this[WEBSOCKET]!;
    websocket.owner.failed(websocket, error.message, error.code);
  };

  private static readonly onDrain = function (this: OwnedSocket): void {
    const websocket = this[WEBSOCKET]!;
    websocket.heardMs = websocket.owner.clock.monotonicMs();
    if (websocket.state !== CLOSED) websocket.owner.drained(websocket);
  };
}

/** A close frame with `code` and as much of `reason` as fits (cut on a character boundary). */
export function closeFrame(code: number, reason: string): Buffer {
  let reasonBytes = Buffer.from(reason, 'utf8');
  if (reasonBytes.length > CONTROL_PAYLOAD_BYTES_MAX - 2) {
    let end = CONTROL_PAYLOAD_BYTES_MAX - 2;
    while (end > 0 && (reasonBytes[end]! & 0xc0) === 0x80) end--; // not inside a UTF-8 sequence
    reasonBytes = reasonBytes.subarray(0, end);
  }
  const payload = Buffer.allocUnsafe(2 + reasonBytes.length);
  payload.writeUInt16BE(code, 0);
  reasonBytes.copy(payload, 2);
  return controlFrame(Opcode.CLOSE, payload);
}
