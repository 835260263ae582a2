/**
 * Reading a `shardline report` page in tests: its timeline's rows (cli/report/render.ts draws a
 * `g.unit` per work unit, with `data-shard` and `data-unit`, and a `g.shard` above the units of a
 * split shard; each row's tooltip first, then its label).
 */

/** What a unit's timeline row holds (its bars, ticks and markers), or '' when there is no such row. */
export function timelineUnit(html: string, shardId: number, unit = 0): string {
  const row = new RegExp(
    `<g class="unit[^"]*" data-shard="${shardId}" data-unit="${unit}"[^>]*>(.*?)</g>`,
  ).exec(html);
  return row?.[1] ?? '';
}

/** The timeline's row labels, top to bottom (a split shard's own row, then its units'). */
export function timelineLabels(html: string): string[] {
  const rows = html.matchAll(
    /<g class="(?:unit|shard)[^"]*"[^>]*><title>[^<]*<\/title><text[^>]*>([^<]*)<\/text>/g,
  );
  return [...rows].map((m) => m[1]!);
}
