// Lint configuration: typescript-eslint's recommended type-aware rules, plus a few
// that keep the codebase honest (no floating promises: an unawaited write is a lost error).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { importBoundaries } from './eslint.boundaries.js';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'eslint.config.js', 'eslint.boundaries.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's test()/describe() return promises that the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', name: ['test', 'it', 'describe', 'suite'], package: 'node:test' }] },
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  // No getter or setter in an object literal: V8 gives each such object a hidden class of its own (its accessor is a new
  // closure each time), so a literal made per request or per entry fills old space with maps and makes every call on
  // it megamorphic. The store's write view had one: node CPU per wire PUT +17%, 3-4x the full collections
  // (docs/performance.md, "A getter on the write view"). Classes' accessors live on the prototype and are fine.
  {
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "ObjectExpression > Property[kind='get'], ObjectExpression > Property[kind='set']",
          message: 'no accessor in an object literal (a hidden class per object): use a method, a plain property, or a class',
        },
        {
          // Node's recursive mkdir loops for ever under a directory that refuses new entries with ENOENT (/proc).
          selector: "CallExpression[callee.name=/^mkdir(Sync)?$/] Property[key.name='recursive']",
          message: "no recursive mkdir in src/ (it hangs under /proc): use makeDirectories from src/fs/make-directories.ts",
        },
      ],
    },
  },
  // The dashboard's browser script (src/ui/static/) is plain JavaScript outside the TypeScript project.
  { files: ['src/ui/static/**/*.js'], ...tseslint.configs.disableTypeChecked },
  {
    files: ['src/ui/static/**/*.js'],
    languageOptions: {
      sourceType: 'module',
      globals: { document: 'readonly', location: 'readonly', fetch: 'readonly', sessionStorage: 'readonly', setInterval: 'readonly', AbortSignal: 'readonly', URL: 'readonly', Node: 'readonly' },
    },
  },
  // Import boundaries of src/api/ and src/client/ (see eslint.boundaries.js).
  ...importBoundaries,
);
