/**
 * A bounded JSON reader for request bodies, in two steps:
 *
 * 1. `JsonValidator` runs over the body's chunks as they arrive (`push`, then `end`): an explicit state machine over
 *    bytes that checks the structure (RFC 8259 grammar of containers, strings, literals; number tokens by their
 *    character class) and refuses, at the byte where it happens, a body that nests deeper than `depthMax`, holds more
 *    than `elementsMax` values, a string longer than `stringBytesMax` (counted as the UTF-8 bytes it decodes to), or a
 *    `\u` escape of a surrogate without its pair. A hostile body (megabytes of `[[[[`, millions of `[]`) is refused
 *    after a bounded prefix instead of after parsing it all. It also refuses a member name given twice in one object
 *    (RFC 8259 leaves the meaning open; `JSON.parse` keeps the last, so `{"success":[put],"success":[]}` silently
 *    dropped the put): it holds the names of each open object, decoded, which the limits bound (at most one name per
 *    value, each within nameBytesMax), and no other part of the body.
 *    Member names have their own limit, far below a string's: the names Mercury reads are its own field names (13
 *    bytes at most), and a name is the one thing held while it is read. The name being read is gathered, escapes as
 *    written, into one buffer of the validator (at most 6 bytes per decoded byte, `\u0061`), never as a Buffer object
 *    per piece: that was one object of ~100 bytes of heap per escape byte, and one 8 MB body of `\u0061` in a name
 *    took a node from 56 MiB to 1 GiB (audit, 2026-12-06). Strings, escapes in them and numbers are counted, not
 *    held: memory per body byte is a small constant whatever the body's shape.
 * 2. `parseValidatedJson` checks the whole body is UTF-8 (native, `isUtf8`) and hands it to `JSON.parse`, which is
 *    the final judge of the grammar (number syntax, control characters in strings). The structure it builds is bounded
 *    by the limits step 1 enforced.
 *
 * Without step 1's surrogate check and step 2's UTF-8 check, `JSON.parse` and `Buffer.from(text, 'utf8')` would
 * silently replace invalid bytes and lone surrogates with U+FFFD, and a transaction would commit bytes the client
 * never sent. Each refusal is a MercuryError with a stable code (src/api/errors.ts):
 *
 *   INVALID_JSON            not JSON (the message names the byte offset), or a member name twice in one object
 *   INVALID_UTF8            a byte sequence that is not UTF-8
 *   LONE_SURROGATE          `\uD800`..`\uDFFF` not part of a high-low pair
 *   JSON_TOO_DEEP           containers nested deeper than depthMax
 *   JSON_TOO_MANY_ELEMENTS  more than elementsMax values (containers, strings, numbers, literals; names not counted)
 *   JSON_STRING_TOO_LONG    a string longer than stringBytesMax decoded UTF-8 bytes
 *   INVALID_ARGUMENT        a member name longer than nameBytesMax decoded UTF-8 bytes: no field has such a name
 */
import { isUtf8 } from 'node:buffer';
import { MercuryError } from './errors.js';
import { growBuffer } from './grow.js';

export interface JsonLimits {
  /** Containers nested in one another: `{}` is depth 1, `{"a":[]}` depth 2. */
  readonly depthMax: number;
  /** Values in the whole document, containers included, member names not. */
  readonly elementsMax: number;
  /** Decoded UTF-8 bytes of one string value. */
  readonly stringBytesMax: number;
  /** Decoded UTF-8 bytes of one member name (JSON_NAME_BYTES_MAX for what Mercury reads, src/api/limits.ts). */
  readonly nameBytesMax: number;
}

const enum State {
  /** A value must come (top level, after `:`, after `,` in an array). */
  Value,
  /** Just after `[`: a value or `]`. */
  ArrayFirst,
  /** Just after `{`: a member name or `}`. */
  ObjectFirst,
  /** After `,` in an object: a member name. */
  Name,
  /** After a member name: `:`. */
  Colon,
  /** After a value inside a container: `,` or the closing bracket. */
  AfterValue,
  /** After the top-level value: only whitespace. */
  Done,
  String,
  /** After `\` in a string. */
  Escape,
  /** In the four hex digits of `\u`. */
  Unicode,
  Number,
  /** In `true`, `false` or `null`. */
  Literal,
}

const ARRAY = 1;
const OBJECT = 2;

/** A string's bytes are scanned in JS up to this many, then searched natively. */
const SHORT_SCAN_BYTES = 32;
/**
 * Raw bytes of a member name per decoded byte, at most: `\u0061` is 6 for 1 (`\n` 2 for 1, a surrogate pair 12 for
 * 4, a plain byte 1 for 1). The name buffer holds this many per byte of nameBytesMax, and one escape being read.
 */
const NAME_RAW_BYTES_PER_BYTE = 6;
/** The name buffer's first size: most names that span chunks or hold an escape are short. */
const NAME_BUFFER_BYTES_MIN = 64;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

/** Characters a number token may hold; JSON.parse checks their order. */
function isNumberByte(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || byte === 0x2d || byte === 0x2b || byte === 0x2e || byte === 0x65 || byte === 0x45;
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x61 + 10;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x41 + 10;
  return -1;
}

/** The escapes of JSON other than `\u`. */
const SIMPLE_ESCAPES: ReadonlySet<number> = new Set([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);

function describeByte(byte: number): string {
  return byte >= 0x21 && byte <= 0x7e ? `"${String.fromCharCode(byte)}"` : `byte 0x${byte.toString(16).padStart(2, '0')}`;
}

/** Incremental structural check of one JSON document; see the header. Feed every chunk to `push`, then call `end`. */
export class JsonValidator {
  private state: State = State.Value;
  /** Container kinds, innermost last; never longer than depthMax. */
  private readonly stack: number[] = [];
  /** The member names of each open object, innermost last (one per OBJECT of `stack`). */
  private readonly names: ObjectNames[] = [];
  /**
   * The raw bytes of the member name being read (escapes as written), the first `nameRawBytes` of `nameRaw`, and
   * whether it holds an escape. The buffer is the validator's one, made the first time a name has an escape or spans
   * chunks (the common name is decoded from its chunk), grown by doubling to at most the largest name's raw bytes.
   */
  private nameRaw: Buffer | undefined = undefined;
  private nameRawBytes = 0;
  private nameEscaped = false;
  private elements = 0;
  /** Bytes consumed before the current chunk, for error messages. */
  private offset = 0;
  // The current string.
  private stringBytes = 0;
  /** stringBytesMax, or nameBytesMax in a member name. */
  private stringBytesLimit = 0;
  private stringIsName = false;
  /** A `\uD800`..`\uDBFF` was just read; the next thing must be `\u` + a low surrogate. */
  private highSurrogatePending = false;
  private unicodeDigits = 0;
  private unicodeValue = 0;
  /** The next quote and backslash in the current chunk (-1: none, -2: not searched yet). */
  private nextQuote = -2;
  private nextBackslash = -2;
  // The current literal.
  private literal = '';
  private literalIndex = 0;

  constructor(private readonly limits: JsonLimits) {
    // src/api imports nothing but node:buffer: a plain throw stands for the assertion.
    if (!(limits.depthMax >= 1 && limits.elementsMax >= 1 && limits.stringBytesMax >= 0 && limits.nameBytesMax >= 0)) throw new RangeError(`invalid JSON limits ${JSON.stringify(limits)}`);
  }

  /** Values seen so far (containers included). */
  get elementCount(): number {
    return this.elements;
  }

  /** Checks the next bytes of the document; throws a MercuryError at the first violation. */
  push(chunk: Buffer): void {
    const length = chunk.length;
    this.nextQuote = -2;
    this.nextBackslash = -2;
    let i = 0;
    while (i < length) {
      const byte = chunk[i]!;
      switch (this.state) {
        case State.String: {
          if (this.highSurrogatePending && byte !== BACKSLASH) this.loneSurrogate(this.offset + i);
          // Plain bytes of a string, up to the next quote or backslash, found natively (memchr); the positions are
          // kept per chunk so that many short strings do not rescan it. Bytes >= 0x80 count one each, which is their
          // UTF-8 length (the encoding itself is checked once, natively, by parseValidatedJson).
          // Short strings (keys, names, small values) end within a few bytes: a plain loop is cheaper than a call.
          let j = i;
          const shortEnd = Math.min(length, i + SHORT_SCAN_BYTES);
          while (j < shortEnd) {
            const b = chunk[j]!;
            if (b === QUOTE || b === BACKSLASH) break;
            j++;
          }
          if (j === shortEnd && j < length) {
            if (this.nextQuote !== -1 && this.nextQuote < j) this.nextQuote = chunk.indexOf(QUOTE, j);
            if (this.nextBackslash !== -1 && this.nextBackslash < j) this.nextBackslash = chunk.indexOf(BACKSLASH, j);
            const quote = this.nextQuote === -1 ? length : this.nextQuote;
            const backslash = this.nextBackslash === -1 ? length : this.nextBackslash;
            j = quote < backslash ? quote : backslash;
          }
          // Refused at the first byte past the limit, which is where the run crosses it (a plain byte counts one).
          this.addStringBytes(j - i, this.offset + i + this.stringBytesLimit - this.stringBytes);
          if (this.stringIsName && chunk[j] === QUOTE && this.nameRawBytes === 0 && !this.nameEscaped) {
            // The common case: a whole name without escapes in this chunk, decoded from it without a copy.
            this.endName(chunk, i, j, this.offset + j);
            this.state = State.Colon;
            i = j + 1;
            continue;
          }
          if (this.stringIsName && j > i) this.addNameBytes(chunk, i, j);
          if (j === length) {
            i = j;
            continue;
          }
          if (chunk[j] === QUOTE) this.endString(this.offset + j);
          else {
            this.state = State.Escape;
            if (this.stringIsName) this.nameEscape(chunk, j);
          }
          i = j + 1;
          continue;
        }
        case State.Escape:
          if (this.stringIsName) this.nameEscape(chunk, i);
          if (byte === 0x75) {
            this.state = State.Unicode;
            this.unicodeDigits = 0;
            this.unicodeValue = 0;
          } else {
            if (!SIMPLE_ESCAPES.has(byte)) this.invalid(`invalid escape \\${String.fromCharCode(byte)} in a string`, i);
            if (this.highSurrogatePending) this.loneSurrogate(this.offset + i);
            this.addStringBytes(1, this.offset + i);
            this.state = State.String;
          }
          break;
        case State.Unicode: {
          const digit = hexValue(byte);
          if (digit < 0) this.invalid(`invalid \\u escape (${describeByte(byte)} is not a hex digit)`, i);
          if (this.stringIsName) this.nameEscape(chunk, i);
          this.unicodeValue = this.unicodeValue * 16 + digit;
          if (++this.unicodeDigits === 4) this.endUnicode(this.offset + i);
          break;
        }
        case State.Number:
          if (isNumberByte(byte)) break;
          this.afterValue();
          continue; // the byte ends the number and is read again in the new state
        case State.Literal:
          if (byte !== this.literal.charCodeAt(this.literalIndex)) this.invalid(`unexpected ${describeByte(byte)} in "${this.literal}"`, i);
          if (++this.literalIndex === this.literal.length) this.afterValue();
          break;
        default:
          if (!isWhitespace(byte)) this.structural(byte, i);
      }
      i++;
    }
    this.offset += length;
  }

  /** The document ended: throws unless it was one complete value. */
  end(): void {
    if (this.state === State.Number) this.afterValue();
    if (this.state !== State.Done) {
      if (this.state === State.Value && this.stack.length === 0 && this.elements === 0) this.invalid('the body is empty', 0, true);
      this.invalid('the body ends in the middle of a value', 0, true);
    }
  }

  /** A byte outside strings, numbers and literals. */
  private structural(byte: number, i: number): void {
    switch (this.state) {
      case State.Value:
        this.beginValue(byte, i);
        return;
      case State.ArrayFirst:
        if (byte === 0x5d) this.close(ARRAY, byte, i);
        else this.beginValue(byte, i);
        return;
      case State.ObjectFirst:
        if (byte === 0x7d) this.close(OBJECT, byte, i);
        else if (byte === QUOTE) this.beginString(true);
        else this.invalid(`expected a member name or "}", got ${describeByte(byte)}`, i);
        return;
      case State.Name:
        if (byte === QUOTE) this.beginString(true);
        else this.invalid(`expected a member name, got ${describeByte(byte)}`, i);
        return;
      case State.Colon:
        if (byte === 0x3a) this.state = State.Value;
        else this.invalid(`expected ":", got ${describeByte(byte)}`, i);
        return;
      case State.AfterValue: {
        const container = this.stack[this.stack.length - 1];
        if (byte === 0x2c) this.state = container === OBJECT ? State.Name : State.Value;
        else if (byte === 0x5d || byte === 0x7d) this.close(byte === 0x5d ? ARRAY : OBJECT, byte, i);
        else this.invalid(`expected "," or "${container === OBJECT ? '}' : ']'}", got ${describeByte(byte)}`, i);
        return;
      }
      case State.Done:
        this.invalid(`unexpected ${describeByte(byte)} after the end of the JSON value`, i);
        return;
      default:
        throw new Error(`bug: a structural byte in state ${this.state}`);
    }
  }

  private beginValue(byte: number, i: number): void {
    if (++this.elements > this.limits.elementsMax)
      throw new MercuryError('JSON_TOO_MANY_ELEMENTS', `the body holds more than ${this.limits.elementsMax} JSON values (refused at byte ${this.offset + i})`, {
        details: { limit: this.limits.elementsMax },
      });
    if (byte === 0x7b || byte === 0x5b) {
      if (this.stack.length === this.limits.depthMax)
        throw new MercuryError('JSON_TOO_DEEP', `the body nests JSON deeper than ${this.limits.depthMax} levels (refused at byte ${this.offset + i})`, {
          details: { limit: this.limits.depthMax },
        });
      this.stack.push(byte === 0x7b ? OBJECT : ARRAY);
      if (byte === 0x7b) this.names.push([]);
      this.state = byte === 0x7b ? State.ObjectFirst : State.ArrayFirst;
    } else if (byte === QUOTE) this.beginString(false);
    else if (byte === 0x2d || (byte >= 0x30 && byte <= 0x39)) this.state = State.Number;
    else if (byte === 0x74 || byte === 0x66 || byte === 0x6e) {
      this.literal = byte === 0x74 ? 'true' : byte === 0x66 ? 'false' : 'null';
      this.literalIndex = 1;
      this.state = State.Literal;
    } else this.invalid(`expected a JSON value, got ${describeByte(byte)}`, i);
  }

  private close(kind: number, byte: number, i: number): void {
    if (this.stack.pop() !== kind) this.invalid(`unexpected ${describeByte(byte)}`, i);
    if (kind === OBJECT) this.names.pop();
    this.afterValue();
  }

  private afterValue(): void {
    this.state = this.stack.length === 0 ? State.Done : State.AfterValue;
  }

  private beginString(isName: boolean): void {
    this.state = State.String;
    this.stringIsName = isName;
    this.stringBytes = 0;
    this.stringBytesLimit = isName ? this.limits.nameBytesMax : this.limits.stringBytesMax;
    this.highSurrogatePending = false;
    this.nameRawBytes = 0;
    this.nameEscaped = false;
  }

  private endString(at: number): void {
    if (this.stringIsName) this.endName(this.nameRaw ?? EMPTY, 0, this.nameRawBytes, at);
    this.state = this.stringIsName ? State.Colon : this.stack.length === 0 ? State.Done : State.AfterValue;
  }

  /** A byte of an escape in a member name (kept as written; decoded with the name). */
  private nameEscape(chunk: Buffer, i: number): void {
    this.nameEscaped = true;
    this.addNameBytes(chunk, i, i + 1);
  }

  /** Copies raw bytes of the member name being read into the name buffer; they were counted against nameBytesMax. */
  private addNameBytes(chunk: Buffer, start: number, end: number): void {
    const filled = this.nameRawBytes + end - start;
    // Counted first, so within the limit: NAME_RAW_BYTES_PER_BYTE per decoded byte, and the escape being read.
    const capacity = NAME_RAW_BYTES_PER_BYTE * (this.limits.nameBytesMax + 1);
    if (filled > capacity) throw new Error(`bug: ${filled} raw bytes of a member name counted within ${this.limits.nameBytesMax}`);
    const raw = growBuffer(this.nameRaw, this.nameRawBytes, filled, capacity, NAME_BUFFER_BYTES_MIN);
    this.nameRaw = raw;
    chunk.copy(raw, this.nameRawBytes, start, end);
    this.nameRawBytes = filled;
  }

  /** The member name just read: refused if its object has it already (names compare decoded: `"a"` is `"\u0061"`). */
  private endName(raw: Buffer, start: number, end: number, at: number): void {
    // Bytes that are not UTF-8 would decode to U+FFFD and make different names look alike: refused as they will be.
    // Names are short and mostly ASCII, which is UTF-8 and reads fastest as latin1.
    let ascii = true;
    for (let i = start; i < end && ascii; i++) ascii = raw[i]! < 0x80;
    if (!ascii && !isUtf8(raw.subarray(start, end))) throw invalidUtf8();
    let name = raw.toString(ascii ? 'latin1' : 'utf8', start, end);
    if (this.nameEscaped) {
      try {
        name = JSON.parse(`"${name}"`) as string;
      } catch (error) {
        this.invalid(`a member name is not a JSON string (${(error as Error).message})`, 0, true);
      }
    }
    const top = this.names.length - 1;
    const names = this.names[top]!;
    if (Array.isArray(names) ? names.includes(name) : names.has(name)) {
      const shown = JSON.stringify(name.length > 100 ? `${name.slice(0, 100)}...` : name);
      throw new MercuryError('INVALID_JSON', `request body gives the member name ${shown} twice in one object (at byte ${at}); give each name once`);
    }
    if (!Array.isArray(names)) names.add(name);
    else if (names.length < NAMES_SCANNED_MAX) names.push(name);
    else this.names[top] = new Set([...names, name]);
  }

  private endUnicode(at: number): void {
    const unit = this.unicodeValue;
    const isHigh = unit >= 0xd800 && unit <= 0xdbff;
    const isLow = unit >= 0xdc00 && unit <= 0xdfff;
    if (this.highSurrogatePending) {
      if (!isLow) this.loneSurrogate(at);
      this.highSurrogatePending = false;
      this.addStringBytes(2, at); // with the high half's 2: the 4 UTF-8 bytes of the pair
    } else if (isLow) this.loneSurrogate(at);
    else if (isHigh) {
      this.highSurrogatePending = true;
      this.addStringBytes(2, at);
    } else this.addStringBytes(unit < 0x80 ? 1 : unit < 0x800 ? 2 : 3, at);
    this.state = State.String;
  }

  /** Counts decoded bytes of the current string; `at` is the byte to name if they take it past its limit. */
  private addStringBytes(bytes: number, at: number): void {
    this.stringBytes += bytes;
    if (this.stringBytes <= this.stringBytesLimit) return;
    const limit = this.stringBytesLimit;
    // A name that long is no field of anything Mercury reads: refused as an unknown field is, before it is gathered.
    if (this.stringIsName)
      throw new MercuryError('INVALID_ARGUMENT', `a JSON member name in the body is longer than ${limit} bytes, longer than any field's name (refused at byte ${at})`, {
        details: { limit },
      });
    throw new MercuryError('JSON_STRING_TOO_LONG', `a JSON string in the body is longer than ${limit} bytes (refused at byte ${at})`, { details: { limit } });
  }

  private loneSurrogate(at: number): never {
    throw new MercuryError(
      'LONE_SURROGATE',
      `a \\u escape in the body (near byte ${at}) is half of a UTF-16 surrogate pair without the other half; it encodes no character`,
    );
  }

  private invalid(message: string, i: number, atEnd = false): never {
    throw new MercuryError('INVALID_JSON', `request body is not valid JSON: ${message}${atEnd ? '' : ` at byte ${this.offset + i}`}`);
  }
}

/**
 * The names of one open object: a short list, scanned (most objects have a few names, and a Set per object cost more
 * than the check), becoming a Set past NAMES_SCANNED_MAX names so that an object of many names stays linear.
 */
type ObjectNames = string[] | Set<string>;
const NAMES_SCANNED_MAX = 8;
const EMPTY = Buffer.alloc(0);

function invalidUtf8(): MercuryError {
  return new MercuryError('INVALID_UTF8', 'the request body is not valid UTF-8; send binary keys and values as base64');
}

/**
 * The value of a body that passed a JsonValidator: refuses bytes that are not UTF-8, then parses. JSON.parse still
 * refuses what the validator leaves to it (number syntax, control characters in strings).
 */
export function parseValidatedJson(body: Buffer): unknown {
  if (!isUtf8(body)) throw invalidUtf8();
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (error) {
    throw new MercuryError('INVALID_JSON', `request body is not valid JSON: ${(error as Error).message}`);
  }
}

/** Validates and parses a whole body at once (bodies that are already in memory; the server streams them instead). */
export function parseBoundedJson(body: Buffer, limits: JsonLimits): unknown {
  const validator = new JsonValidator(limits);
  validator.push(body);
  validator.end();
  return parseValidatedJson(body);
}
