/**
 * A bare node:http (or, given a certificate, node:https) server for `npm run bench -- --only bare-get`: it answers
 * every request, once its body is read, with one fixed answer (the body and content type that a Mercury node gives
 * for a GET of a benchmark key), and does nothing else. Measured beside a node with the same load generator, it is the
 * floor of what Node's HTTP stack costs per request on this machine, and, TLS against plain, what TLS costs that
 * stack alone: the part of a node's TLS cost that is not Mercury's.
 *
 * `node dist/bench/support/bare-http-server.js ANSWER_BASE64 [CERT_FILE KEY_FILE]`; prints `listening on URL` once.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

const [answerBase64, certFile, keyFile] = process.argv.slice(2);
if (answerBase64 === undefined) {
  process.stderr.write('usage: bare-http-server.js ANSWER_BASE64 [CERT_FILE KEY_FILE]\n');
  process.exit(2);
}
const answer = Buffer.from(answerBase64, 'base64');

function handle(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  req.once('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length });
    res.end(answer);
  });
}

const tls = certFile !== undefined && keyFile !== undefined;
const server = tls ? createHttpsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, handle) : createHttpServer(handle);
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`listening on ${tls ? 'https' : 'http'}://127.0.0.1:${port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
