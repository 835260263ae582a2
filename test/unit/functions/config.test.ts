/**
 * The functions' data bucket setting: datasets go to SHARDLINE_DATA_BUCKET when it is set, to
 * the upload's own bucket when it is not (single-bucket deployments), and a value that is not a
 * bucket name fails naming the variable.
 */
import { parseFunctionsConfig } from '../../../functions/config';
import { dataBucketOf } from '../../../core/ingest/ingest';

test('SHARDLINE_DATA_BUCKET names where datasets go; unset or empty, the upload bucket', () => {
  const two = parseFunctionsConfig({ SHARDLINE_DATA_BUCKET: 'team-data' });
  expect(two.ingest.dataBucket).toBe('team-data');
  expect(dataBucketOf(two.ingest, 'team-data-uploads')).toBe('team-data');
  for (const env of [{}, { SHARDLINE_DATA_BUCKET: '' }]) {
    const one = parseFunctionsConfig(env);
    expect(one.ingest.dataBucket).toBeUndefined();
    expect(dataBucketOf(one.ingest, 'legacy-bucket')).toBe('legacy-bucket');
  }
});

test('a data bucket that is not a bucket name fails, naming the variable and the value', () => {
  for (const bad of ['gs://team-data', 'team-data/datasets', 'Team_Data'])
    expect(() => parseFunctionsConfig({ SHARDLINE_DATA_BUCKET: bad })).toThrow(
      `environment variable SHARDLINE_DATA_BUCKET must be a bucket name (no gs://, no path), got ${JSON.stringify(bad)}`,
    );
});
