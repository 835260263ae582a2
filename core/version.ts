/**
 * The version printed by `shardline --version` and written into `created_by` fields. A
 * neutral home: the CLI, the worker and the functions all record it.
 */
// Kept equal to package.json's version by test/unit/version.test.ts.
export const SHARDLINE_VERSION = '0.1.0';
