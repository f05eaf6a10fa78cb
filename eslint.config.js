// Lint configuration: typescript-eslint's recommended type-aware rules, plus a few
// that keep the codebase honest (no floating promises: an unawaited write is a lost error).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'eslint.config.js'] },
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
  // The wire contracts (src/api/) depend on nothing but Buffer, so that every side can share them; the client depends
  // on the contracts and its own files, so that a program talking to a node never loads the node (LMDB, the hub).
  {
    files: ['src/api/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '^(?!node:buffer$|\\./)', message: 'src/api/ imports nothing but node:buffer and its own files.' },
            { regex: '^\\./.*/', message: 'src/api/ is flat: import its own files only.' },
          ],
        },
      ],
    },
  },
  {
    files: ['src/client/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.\\./(?!api/|clock/)',
              message: 'src/client/ imports only src/api/ (the wire contracts), src/clock/ and its own files, never node code.',
            },
            // The embedded reader (openLocal) is an LMDB reader: it names the store's type, and loads the store lazily.
            { regex: '^\\.\\./store/index\\.js$', allowTypeImports: true, message: 'only a type import of the store' },
          ],
        },
      ],
    },
  },
);
