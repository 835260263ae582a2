/**
 * One writer process for the local blob store's cross-process generation test (spawned through
 * ts-processes.ts; not a test itself). Says `ready`, waits for `go`, then writes one key
 * `writes` times as fast as it can and prints what each write returned as one JSON line.
 *
 * argv[2]: JSON `{ root, key, writer, writes }`.
 */
import { createInterface } from 'node:readline';

import { LocalBlobStore } from '../../core/blob/local';
import { toError } from '../../core/errors';

interface WriterArgs {
  root: string;
  key: string;
  writer: string;
  writes: number;
}

/** One write: the content written and the generation the store returned for it. */
export interface WriteRecord {
  content: string;
  generation: string;
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as WriterArgs;
  const store = new LocalBlobStore(args.root);
  process.stdout.write('ready\n');
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === 'go') break;
  }
  lines.close();
  const writes: WriteRecord[] = [];
  for (let i = 0; i < args.writes; i++) {
    const content = `${args.writer} write ${i}`;
    const info = await store.writeAll(args.key, content);
    writes.push({ content, generation: info.generation });
  }
  process.stdout.write(`${JSON.stringify({ writes })}\n`);
}

main().catch((e: unknown) => {
  process.stdout.write(`${JSON.stringify({ error: toError(e).message })}\n`);
  process.exitCode = 1;
});
