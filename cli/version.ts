/** The version printed by `shardline --version` and written into `created_by` fields. */
// Kept in sync with package.json by test/unit/cli/version.test.ts.
export const SHARDLINE_VERSION = '0.1.0';
