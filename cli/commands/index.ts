/**
 * Every `shardline` command, in the order `--help` lists them (the seed's order: create,
 * claim, status, complete, reset, then the rest).
 */
import type { Command } from '../command';
import { createCommand } from './create';
import { demoCommand } from './demo';

/** The registry `cli/main.ts` dispatches on. */
export const COMMANDS: readonly Command[] = [createCommand, demoCommand];
