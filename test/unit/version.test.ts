/** The version the code records is the package's. */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { SHARDLINE_VERSION } from '../../core/version';

test('SHARDLINE_VERSION equals package.json version', () => {
  const pkg = JSON.parse(
    readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf8'),
  ) as { version: string };
  expect(SHARDLINE_VERSION).toBe(pkg.version);
});
