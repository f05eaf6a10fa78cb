/**
 * The README against the stable codes and the metrics of the source: every error code in the error table with the
 * status the node sends, every replication refusal reason, every watch error and close code, every metric a node
 * registers, every option of the `mercury` command. A code, metric or option added without its documentation fails here,
 * and so does a row naming one that is gone.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ERROR_STATUS, ErrorCode, ProtocolErrorCode, RefuseReason, WatchCloseCode, WatchErrorCode } from '../src/api/index.js';

const root = new URL('../../', import.meta.url);
const readme = readFileSync(new URL('README.md', root), 'utf8');
const docs = readdirSync(new URL('docs/', root))
  .filter((name) => name.endsWith('.md'))
  .map((name) => readFileSync(new URL(`docs/${name}`, root), 'utf8'));

/** The text of the README section that starts at `heading`, up to the next heading of its level or above. */
function section(heading: string): string {
  const start = readme.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `the README has a section "${heading}"`);
  const level = /^#+/.exec(heading)![0];
  const rest = readme.slice(start + heading.length + 2);
  const end = rest.search(new RegExp(`\\n#{1,${level.length}} `));
  return end < 0 ? rest : rest.slice(0, end);
}

/** Rows of the markdown tables in `text` whose first cell names codes: each code of the cell -> the row's second cell. */
function codeRows(text: string): Map<string, string> {
  const rows = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^\| ((?:`[A-Z0-9_]+`(?:, )?)+) \| ([^|]*) \|/.exec(line);
    if (match === null) continue;
    for (const code of match[1]!.matchAll(/`([A-Z0-9_]+)`/g)) rows.set(code[1]!, match[2]!.trim());
  }
  return rows;
}

describe('docs: README codes, metrics and options', () => {
  test('docs: the error table names every error code with the HTTP status the node sends, and no other code', () => {
    const rows = codeRows(section('### Error codes'));
    const wrong: string[] = [];
    for (const code of Object.values(ErrorCode)) {
      const status = rows.get(code);
      if (status !== String(ERROR_STATUS[code])) wrong.push(`${code}: ${status === undefined ? 'no row' : `row says ${status}`}, the node sends ${ERROR_STATUS[code]}`);
    }
    for (const code of rows.keys()) if (!(code in ERROR_STATUS)) wrong.push(`${code}: a row for a code that does not exist`);
    assert.deepEqual(wrong, []);
  });

  test('docs: the refusal table names every replication REFUSE reason, and the protocol error codes', () => {
    const replication = section('## Replication');
    const rows = codeRows(replication);
    const missing = Object.keys(RefuseReason).filter((reason) => !rows.has(reason));
    const extra = [...rows.keys()].filter((reason) => !(reason in RefuseReason));
    const protocol = Object.values(ProtocolErrorCode).filter((code) => !replication.includes(`\`${code}\``));
    assert.deepEqual({ missing, extra, protocol }, { missing: [], extra: [], protocol: [] });
  });

  test('docs: the Watch API names every watch error code and close code', () => {
    const watch = section('## Watch API');
    const errors = Object.values(WatchErrorCode).filter((code) => !watch.includes(`\`${code}\``));
    const closes = Object.values(WatchCloseCode).filter((code) => !new RegExp(`\\b${code}\\b`).test(watch));
    assert.deepEqual({ errors, closes }, { errors: [], closes: [] });
  });

  test('docs: every metric a node registers is named in the README or docs/', () => {
    const sources = new URL('src/', root);
    const names = new Set<string>();
    for (const file of readdirSync(sources, { recursive: true, encoding: 'utf8' })) {
      if (!file.endsWith('.ts')) continue;
      const text = readFileSync(new URL(join('src', file), root), 'utf8');
      for (const match of text.matchAll(/\.(?:counter|gauge|histogram|counterReading)\(\s*['`]([a-z0-9_]+)['`]/g)) names.add(match[1]!);
    }
    assert.ok(names.size >= 60, `found the registered metrics (${names.size})`);
    const all = [readme, ...docs].join('\n');
    // The README's replication paragraph names its metrics after the first by their suffix: `_apply_seconds`.
    const named = (name: string): boolean =>
      new RegExp(`\\b${name}\\b`).test(all) || (name.startsWith('mercury_replication_') && readme.includes(`\`${name.slice('mercury_replication'.length)}\``));
    assert.deepEqual([...names].filter((name) => !named(name)).sort(), []);
  });

  test('docs: every option the mercury command parses is in its --help and in the README', () => {
    const main = readFileSync(new URL('src/cli/main.ts', root), 'utf8');
    const usage = main.slice(main.indexOf('const USAGE = `'), main.indexOf('`;', main.indexOf('const USAGE = `')));
    const options = main.slice(main.indexOf('const OPTIONS = {'), main.indexOf('} satisfies ParseArgsConfig'));
    const names = [...options.matchAll(/^ {2}'?([a-z-]+)'?: \{/gm)].map((match) => `--${match[1]}`);
    assert.ok(names.length >= 40, `found the parsed options (${names.length})`);
    const missing = (text: string): string[] => names.filter((name) => !new RegExp(`${name}(?![a-z-])`).test(text));
    assert.deepEqual({ help: missing(usage), readme: missing(readme) }, { help: [], readme: [] });
  });
});
