// ESLint owns correctness and the boundaries between the folders; Prettier owns formatting
// (docs/conventions.md#tooling-and-comments).
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';
import importX from 'eslint-plugin-import-x';

/**
 * The house's boundaries (docs/architecture.md#where-things-live), as import rules:
 * - core/ is the domain: it imports no outer folder, and the cloud SDKs only in its adapters;
 * - functions/ and worker/ are runtime roles above core/: they never import the CLI;
 * - synthetic/ (generated tasks and models) sits on core/ alone; only the CLI's demo, tests
 *   and benches use it, never a runtime role;
 * - nothing imports bench/ (benches are leaf programs).
 * A second config object for the same files replaces the rule, so each folder lists its rules
 * whole. test/unit/lint/boundaries.test.ts shows each rule failing on a fixture.
 */
const OUTER = (...names) =>
  names.map((n) => ({
    group: [`**/${n}/**`],
    message: `${n}/ is outside this folder's boundary (eslint.config.mjs)`,
  }));
const SDK = {
  group: ['@google-cloud/*'],
  message: 'cloud SDKs are used only in adapters (eslint.config.mjs lists them)',
};
const restrict = (patterns) => ['error', { patterns }];

export default tseslint.config(
  {
    ignores: [
      'node_modules/**',
      'dist/**',
      'coverage/**',
      '.emulators/**',
      '.shardline-demo/**',
      'bench/out/**',
      'test/unit/lint/fixtures/**',
      'jest.config.js',
      'eslint.config.mjs',
    ],
  },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    settings: {
      // Which files import-x parses when it follows an import (the default is .js alone).
      'import-x/extensions': ['.ts'],
      'import-x/resolver-next': [
        importX.createNodeResolver({ extensions: ['.ts', '.js', '.json'] }),
      ],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      'no-throw-literal': 'error',
      // Type-only imports count too: a cycle of types is still two modules that need each other.
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'no-restricted-imports': restrict(OUTER('bench')),
    },
  },
  {
    files: ['core/**/*.ts'],
    rules: {
      'no-restricted-imports': restrict([
        ...OUTER('cli', 'worker', 'functions', 'synthetic', 'bench', 'test'),
        SDK,
      ]),
    },
  },
  {
    // core's adapters: the only core files that may use a cloud SDK.
    files: [
      'core/cloud-clients.ts',
      'core/blob/gcs.ts',
      'core/ledger/firestore.ts',
      'core/ledger/optimistic.ts',
      'core/ingest/firestore-records.ts',
      'core/wakeup/publisher.ts',
    ],
    rules: {
      'no-restricted-imports': restrict(
        OUTER('cli', 'worker', 'functions', 'synthetic', 'bench', 'test'),
      ),
    },
  },
  {
    files: ['functions/**/*.ts', 'worker/**/*.ts'],
    rules: { 'no-restricted-imports': restrict(OUTER('cli', 'synthetic', 'bench', 'test')) },
  },
  {
    files: ['synthetic/**/*.ts'],
    rules: {
      'no-restricted-imports': restrict(OUTER('cli', 'worker', 'functions', 'bench', 'test')),
    },
  },
  {
    files: ['cli/**/*.ts'],
    rules: { 'no-restricted-imports': restrict(OUTER('bench', 'test')) },
  },
  {
    // The tests of a bench's own machinery (the simulator's) import that bench.
    files: ['test/unit/bench/**/*.ts'],
    rules: { 'no-restricted-imports': 'off' },
  },
  prettier,
);
