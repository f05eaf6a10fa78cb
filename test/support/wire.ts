/**
 * A raw wire-port peer for tests (frames in src/api/wire.ts): sends bytes as given, and reads the node's frames one
 * by one, so a test can speak out of turn, send garbage, stop reading, or watch the order of answers.
 */
import { connect, type Socket } from 'node:net';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import { WireFrameReader, decodeAnswer, encodeHello, type WireAnswer } from '../../src/api/index.js';

export class RawWire {
  readonly socket: Socket;
  private readonly reader = new WireFrameReader(64 * 1024 * 1024);
  private readonly answers: WireAnswer[] = [];
  private waiter: (() => void) | undefined;
  /** Resolves when the node closed the connection (or it broke). */
  readonly closed: Promise<void>;
  bytesReceived = 0;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.bytesReceived += chunk.length;
      this.reader.push(chunk);
      for (let frame = this.reader.next(); frame !== undefined; frame = this.reader.next()) {
        if (!('body' in frame)) throw new Error('oversized answer');
        this.answers.push(decodeAnswer(frame));
      }
      this.waiter?.();
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
    void this.closed.then(() => this.waiter?.());
  }

  /**
   * Connects to "host:port" (or a mercury+tcp:// URL), or over TLS with `tls` (CA, client certificate; a mercury+tls://
   * URL); from `localAddress` when given (127.0.0.2: another remote host than the test's other clients).
   */
  static async open(address: string, tls?: ConnectionOptions, localAddress?: string): Promise<RawWire> {
    const { hostname, port } = new URL(address.includes('://') ? address : `mercury+tcp://${address}`);
    const target = { host: hostname.replace(/^\[|\]$/g, ''), port: Number(port), ...(localAddress === undefined ? {} : { localAddress }) };
    const socket = tls === undefined ? connect(target) : connectTls({ ...tls, ...target });
    await new Promise<void>((resolve, reject) => {
      socket.once(tls === undefined ? 'connect' : 'secureConnect', () => resolve());
      socket.once('error', reject);
    });
    return new RawWire(socket);
  }

  /** Opens (over TLS with `tls`, from `localAddress`) and says HELLO (with `token`), and waits for READY. */
  static async ready(address: string, token?: string, tls?: ConnectionOptions, localAddress?: string): Promise<RawWire> {
    const wire = await RawWire.open(address, tls, localAddress);
    wire.send(encodeHello(token));
    const answer = await wire.next();
    if (answer?.type !== 0x81) throw new Error(`expected READY, got ${JSON.stringify(answer)}`);
    return wire;
  }

  send(bytes: Buffer | Uint8Array): boolean {
    return this.socket.write(bytes);
  }

  /** The next frame from the node; undefined once the connection closed with nothing more. */
  async next(timeoutMs = 5_000): Promise<WireAnswer | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.answers.length === 0) {
      if (this.socket.destroyed || this.socket.readableEnded) return undefined;
      if (Date.now() > deadline) throw new Error(`no frame from the node within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
    return this.answers.shift();
  }

  /** The code of an ERROR frame. */
  static code(answer: WireAnswer | undefined): string | undefined {
    return answer?.type === 0x85 ? (JSON.parse(answer.json) as { error: { code: string } }).error.code : undefined;
  }

  static message(answer: WireAnswer | undefined): string {
    return answer?.type === 0x85 ? (JSON.parse(answer.json) as { error: { message: string } }).error.message : '';
  }

  close(): void {
    this.socket.destroy();
  }
}
