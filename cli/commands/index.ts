/**
 * Every `shardline` command, in the order `--help` lists them (the seed's order: create,
 * claim, status, complete, reset, then the rest).
 */
import type { Command } from '../command';
import { claimCommand } from './claim';
import { completeCommand } from './complete';
import { createCommand } from './create';
import { demoCommand } from './demo';
import { failCommand } from './fail';
import { ingestsCommand } from './ingests';
import { planCommand } from './plan';
import { reportCommand } from './report';
import { resetCommand } from './reset';
import { statsCommand } from './stats';
import { statusCommand } from './status';
import { verifyCommand } from './verify';
import { workCommand } from './work';

/** The registry `cli/main.ts` dispatches on. */
export const COMMANDS: readonly Command[] = [
  createCommand,
  claimCommand,
  statusCommand,
  completeCommand,
  resetCommand,
  workCommand,
  failCommand,
  ingestsCommand,
  statsCommand,
  verifyCommand,
  planCommand,
  reportCommand,
  demoCommand,
];
