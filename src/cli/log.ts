/**
 * `mercury log` for people: one line per entry, `seq N  TIME  K ops  by AUTHORS  signed|unsigned  hash H`. Each field
 * is checked before it is used: a page that is not the node's log (no `entries` list) is an AnswerShapeError, a field
 * that is not what the node should send is shown as '?', never a crash.
 */
import { answerList, answerObject, fieldText, formatTimeMs, inLine } from './output.js';

/** Who wrote an entry, for people: "by a, b" ("by ?" for ops whose writer was not recorded). */
function authors(entry: Record<string, unknown>): string {
  if (!Array.isArray(entry.authors)) return 'by ?';
  const names = entry.authors.map((run: unknown) => {
    const author = typeof run === 'object' && run !== null ? (run as Record<string, unknown>).author : undefined;
    return typeof author === 'string' ? inLine(author) : '?';
  });
  return `by ${[...new Set(names)].join(', ')}`;
}

function entryLine(value: unknown): string {
  const entry = answerObject(value, 'a log entry');
  const ops = Array.isArray(entry.ops) ? fieldText(entry.ops.length) : '?';
  const signed = entry.signature === null ? 'unsigned' : typeof entry.signature === 'string' ? 'signed' : 'signature ?';
  return `seq ${fieldText(entry.seq)}  ${formatTimeMs(entry.timeMs)}  ${ops} ops  ${authors(entry)}  ${signed}  hash ${fieldText(entry.hash)}`;
}

/** The human lines of a log page (`GET /v1/log`). */
export function logLines(value: unknown): string {
  const page = answerObject(value, 'the log page');
  const entries = answerList(page.entries, "the log page's entries");
  return entries.map(entryLine).join('\n') || `(no entries; log holds ${fieldText(page.firstSeq)}..${fieldText(page.lastSeq)})`;
}
