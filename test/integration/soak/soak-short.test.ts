/**
 * The short soak (issue 9), in every `npm test`: at least 16 shards, 4 worker processes, at
 * least 10 SIGKILLs at random points, SIGTERMs, redelivered doorbells and a replayed ingest
 * event; then every shard completed, every expected sample exactly once, no lease held.
 * `npm run soak` runs the long one (bench/README.md).
 */
import { formatReport, runSoak } from '../../soak/soak';
import { emulatorEnv } from '../../support/emulators';
import { makeTempDir } from '../../support/tmp';

test('chaos loses nothing and duplicates nothing', async () => {
  const { projectId } = emulatorEnv();
  const { dir, cleanup } = makeTempDir('soak');
  try {
    const report = await runSoak({
      projectId,
      workDir: dir,
      tasks: 160,
      shards: 16,
      workers: 4,
      chaosMs: 30_000,
      minKills: 10,
      leaseSeconds: 4,
      maxAttempts: 10,
      predictionsPerTask: 4,
      seed: 7,
      timeoutMs: 8 * 60_000,
      say: () => undefined,
    });
    process.stderr.write(`short soak:\n${formatReport(report)}\n`);
    expect(report.kills).toBeGreaterThanOrEqual(10);
    expect(report).toMatchObject({
      samplesExpected: 640,
      samplesFound: 640,
      duplicateSamples: 0,
      missingSamples: 0,
      shardsCompleted: 16,
      leasesHeld: 0,
      datasetManifest: true,
    });
    expect(report.duplicateIngestsSuppressed).toBe(report.ingestReplays);
    expect(report.reclaims).toBeGreaterThan(0);
  } finally {
    cleanup();
  }
});
