// Import boundaries, in their own module so that test/lint-boundaries.test.ts checks the very rules eslint.config.js
// applies. The wire contracts (src/api/) depend on nothing but Buffer, so that every side can share them; the client
// depends on the contracts, the clock and its own files, so that a program talking to a node never loads node code
// (server, store, watch hub, replication, commit, log).
export const importBoundaries = [
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
];
