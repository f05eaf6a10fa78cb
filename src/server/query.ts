/**
 * The query string of a request, parsed strictly. `URLSearchParams` alone is lenient where a store must not be: it
 * keeps a malformed escape (`%zz`) as text, and decodes escaped bytes as UTF-8, replacing what is not UTF-8 with
 * U+FFFD, so `?prefix=%ff` would list the keys under EF BF BD instead of under the byte 0xff.
 *
 * Here, as in the key path (`decodeKeyPath`): `%XX` is the byte 0xXX and anything else after `%` is refused with
 * BAD_REQUEST; `+` is a space (the form encoding that `URLSearchParams` writes, which the client uses); a parameter
 * given twice is refused (which one would count?). `bytes(name)` gives a value as the bytes it encodes (prefixes are
 * bytes like keys); `get(name)` as text (UTF-8), for numbers and cursors, whose own rules refuse anything odd.
 *
 * Each method of a route names the parameters it reads (`Route.params`), and any other one is refused with
 * INVALID_ARGUMENT (`refuseUnknown`): a misspelt parameter ignored changes what a request does (`?ifmodseq=0` was an
 * unconditional overwrite, `?minseq=N` a read that did not wait).
 */
import { MercuryError } from '../api/index.js';

export class Query extends URLSearchParams {
  private readonly byName = new Map<string, Buffer>();

  /** Parses `raw`, the part of the request target after `?` (empty when there is none). */
  constructor(raw: string) {
    super();
    if (raw === '') return;
    for (const part of raw.split('&')) {
      if (part === '') continue;
      const equals = part.indexOf('=');
      const name = decodeComponent(equals === -1 ? part : part.slice(0, equals), 'a query parameter name').toString('utf8');
      const value = decodeComponent(equals === -1 ? '' : part.slice(equals + 1), `query parameter ${name}`);
      if (this.byName.has(name)) throw new MercuryError('BAD_REQUEST', `query parameter ${name} is given more than once; give it once`);
      this.byName.set(name, value);
      this.append(name, value.toString('utf8'));
    }
  }

  /** Refuses a parameter not in `allowed` (the parameters of the request's method and route, named by `what`). */
  refuseUnknown(allowed: readonly string[], what: string): void {
    for (const name of this.byName.keys()) {
      if (allowed.includes(name)) continue;
      const takes = allowed.length === 0 ? 'takes no query parameters' : `takes ${allowed.join(', ')}`;
      throw new MercuryError('INVALID_ARGUMENT', `unknown query parameter "${name}": ${what} ${takes} (names are case-sensitive)`);
    }
  }

  /** The bytes a parameter encodes, or null when it is absent. */
  bytes(name: string): Buffer | null {
    return this.byName.get(name) ?? null;
  }
}

function decodeComponent(text: string, what: string): Buffer {
  const plain = text.replaceAll('+', ' ');
  const parts: Buffer[] = [];
  let at = 0;
  while (at < plain.length) {
    const percent = plain.indexOf('%', at);
    const end = percent === -1 ? plain.length : percent;
    // Between escapes, text as its UTF-8 bytes (sliced on escapes only, so no surrogate pair is cut).
    if (end > at) parts.push(Buffer.from(plain.slice(at, end), 'utf8'));
    if (percent === -1) break;
    const hex = plain.slice(percent + 1, percent + 3);
    if (!/^[0-9a-fA-F]{2}$/.test(hex))
      throw new MercuryError('BAD_REQUEST', `malformed percent-encoding "%${hex}" in ${what}; write a byte as % and two hex digits (%25 for "%")`);
    parts.push(Buffer.of(parseInt(hex, 16)));
    at = percent + 3;
  }
  return Buffer.concat(parts);
}
