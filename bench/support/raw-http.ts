/**
 * A minimal keep-alive HTTP/1.1 client for load generation: one socket, one request in flight, responses parsed just
 * far enough to find their end (Content-Length bodies only, which is all a Mercury node sends). Node's own http
 * client spends more CPU per request than the server under test, which would make the benchmark measure the client.
 */
import { connect, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';

export interface RawResponse {
  readonly status: number;
  readonly body: Buffer;
}

export class RawHttpConnection {
  private readonly socket: Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (response: RawResponse) => void; reject: (error: Error) => void } | undefined;
  private readonly ready: Promise<void>;

  /**
   * With `ca` (the node's CA), the connection is TLS (a node started with `--tls-*`). `authorization`: the header
   * value sent with every request (`Bearer TOKEN`, on a node with auth required).
   */
  constructor(
    host: string,
    port: number,
    ca?: Buffer,
    private readonly authorization?: string,
  ) {
    this.socket = ca === undefined ? connect({ host, port, noDelay: true }) : connectTls({ host, port, ca }).setNoDelay(true);
    this.ready = new Promise((resolve, reject) => {
      this.socket.once(ca === undefined ? 'connect' : 'secureConnect', resolve);
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      this.tryParse();
    });
    this.socket.on('error', (error) => this.waiting?.reject(error));
    this.socket.on('close', () => this.waiting?.reject(new Error('connection closed')));
  }

  private tryParse(): void {
    if (this.waiting === undefined) return;
    const headerEnd = this.buffer.indexOf('\r\n\r\n');
    if (headerEnd === -1) return;
    const head = this.buffer.subarray(0, headerEnd).toString('latin1');
    const status = Number(head.slice(9, 12));
    let body: Buffer;
    let end: number;
    if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
      // A streamed answer (/v1/log, a snapshot): chunks of "SIZE-IN-HEX\r\nDATA\r\n" up to a chunk of size 0.
      const chunks: Buffer[] = [];
      let at = headerEnd + 4;
      for (;;) {
        const lineEnd = this.buffer.indexOf('\r\n', at);
        if (lineEnd === -1) return;
        const size = parseInt(this.buffer.subarray(at, lineEnd).toString('latin1'), 16);
        if (this.buffer.length < lineEnd + 2 + size + 2) return;
        chunks.push(this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size));
        at = lineEnd + 2 + size + 2;
        if (size === 0) break;
      }
      body = Buffer.concat(chunks);
      end = at;
    } else {
      const match = /\r\ncontent-length: *(\d+)/i.exec(head);
      end = headerEnd + 4 + (match === null ? 0 : Number(match[1]));
      if (this.buffer.length < end) return;
      body = this.buffer.subarray(headerEnd + 4, end);
    }
    this.buffer = this.buffer.subarray(end);
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting.resolve({ status, body });
  }

  async request(method: string, path: string, body?: Buffer, contentType = 'application/octet-stream'): Promise<RawResponse> {
    await this.ready;
    const auth = this.authorization === undefined ? '' : `authorization: ${this.authorization}\r\n`;
    const head =
      body === undefined
        ? `${method} ${path} HTTP/1.1\r\nhost: localhost\r\n${auth}\r\n`
        : `${method} ${path} HTTP/1.1\r\nhost: localhost\r\n${auth}content-type: ${contentType}\r\ncontent-length: ${body.length}\r\n\r\n`;
    return new Promise((resolve, reject) => {
      // A socket the server already closed (keep-alive idle timeout) would take the write and never answer.
      if (!this.isOpen) return reject(new Error('connection closed'));
      this.waiting = { resolve, reject };
      if (body === undefined) this.socket.write(head);
      else this.socket.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
    });
  }

  /** Resolves once the connection is up (for TLS, once the handshake is done). */
  opened(): Promise<void> {
    return this.ready;
  }

  /** False once either side has closed the socket (a server closes idle keep-alive connections after a while). */
  get isOpen(): boolean {
    return !this.socket.destroyed && this.socket.writable;
  }

  close(): void {
    this.socket.destroy();
  }
}
