/**
 * The import boundaries of eslint.boundaries.js (applied by eslint.config.js): src/api/ imports nothing but
 * node:buffer and its own files; src/client/ imports src/api/, src/clock/ and its own files (and the store's type, for
 * the embedded reader). Checked by linting small sources placed, in name only, in those folders.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import { ESLint, type Linter } from 'eslint';
import tseslint from 'typescript-eslint';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RULE = '@typescript-eslint/no-restricted-imports';
let eslint: ESLint;

before(async () => {
  // A path computed at run time: the module is plain JavaScript beside eslint.config.js, outside the TypeScript build.
  const modulePath = new URL('../../eslint.boundaries.js', import.meta.url).href;
  const { importBoundaries } = (await import(modulePath)) as { importBoundaries: Linter.Config[] };
  // Only the boundaries, on the syntax-only parser: the type-aware rules of the full config need files on disk.
  eslint = new ESLint({
    cwd: ROOT,
    overrideConfigFile: true,
    overrideConfig: [
      { files: ['**/*.ts'], languageOptions: { parser: tseslint.parser }, plugins: { '@typescript-eslint': tseslint.plugin } },
      ...importBoundaries,
    ],
  });
});

async function refused(filePath: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(source, { filePath: `${ROOT}${filePath}` });
  assert.ok(result !== undefined);
  assert.deepEqual(result.messages.filter((message) => message.ruleId !== RULE), [], 'only the boundary rule reports');
  // A line that breaks two patterns is reported twice: each line once.
  return [...new Set(result.messages.map((message) => source.split('\n')[message.line - 1]!.trim()))];
}

describe('lint boundaries: node code stays out of the contracts and the client', () => {
  test('lint boundaries: src/api/ may import node:buffer and its own files, nothing else', async () => {
    const source = [
      "import { isUtf8 } from 'node:buffer';",
      "import { ErrorCode } from './errors.js';",
      "import { KEY_BYTES_MAX } from '../limits.js';",
      "import { Store } from '../store/index.js';",
      "import { createHash } from 'node:crypto';",
      "import { x } from './sub/x.js';",
      "export { parseTxn } from '../server/index.js';",
      'export const used = [isUtf8, ErrorCode, KEY_BYTES_MAX, Store, createHash, x];',
    ].join('\n');
    assert.deepEqual(await refused('src/api/example.ts', source), [
      "import { KEY_BYTES_MAX } from '../limits.js';",
      "import { Store } from '../store/index.js';",
      "import { createHash } from 'node:crypto';",
      "import { x } from './sub/x.js';",
      "export { parseTxn } from '../server/index.js';",
    ]);
  });

  test('lint boundaries: src/client/ may import src/api/, src/clock/ and its own files; the store only as a type', async () => {
    const imports = {
      allowed: [
        "import { ErrorCode } from '../api/index.js';",
        "import { systemClock } from '../clock/index.js';",
        "import { NodeClient } from './http-client.js';",
        "import http from 'node:http';",
        "import type { Store } from '../store/index.js';",
      ],
      refused: [
        "import { Store as RealStore } from '../store/index.js';",
        "import { createApiHandler } from '../server/index.js';",
        "import { WatchHub } from '../watch/index.js';",
        "import { ReplicationClient } from '../replication/index.js';",
        "import { MercuryNode } from '../node/index.js';",
        "import { GroupCommitter } from '../commit/index.js';",
        "import { sealEntry } from '../log/index.js';",
        "import { MercuryError } from '../errors/index.js';",
        "import { KEY_BYTES_MAX } from '../limits.js';",
      ],
    };
    const source = [...imports.allowed, ...imports.refused].join('\n');
    assert.deepEqual(await refused('src/client/example.ts', source), imports.refused);
  });

  test('lint boundaries: other folders are not bound by them', async () => {
    assert.deepEqual(await refused('src/server/example.ts', "import { Store } from '../store/index.js';\nexport const s = Store;"), []);
  });
});
