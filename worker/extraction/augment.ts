/**
 * ARC augmentation: the 8 flips/rotations, a colour permutation and a train-pair order, chosen
 * per (run seed, task content, augmentation index) and recorded with every sample
 * (docs/architecture.md#samples; docs/notes/original-system.md §4.3).
 *
 * Geometry is not random: augmentation `a` uses variant `a % 8` in the original's order
 * (no flip, 0..3 quarter turns, then flip, 0..3), so 8 predictions cover all 8 variants and
 * 16 cover each twice. The colour map keeps colour 0 (the usual background) fixed with
 * probability 0.9 and shuffles all ten colours otherwise, as the original did. The train
 * pairs are shuffled after the colour map.
 */
import { Prng } from '../../core/random';
import type { GridTransform } from './grid';

/** What one sample's augmentation was; written to the part index as `augmentation`. */
export interface Augmentation extends GridTransform {
  /** The augmentation index `a` in [0, predictions_per_task). */
  index: number;
  /** `colorMap[c]` is the colour that replaced colour `c`. */
  colorMap: number[];
  /**
   * The order of the task's train pairs in the prompt: `trainOrder[k]` is the original index
   * of the k-th pair shown. When trailing pairs are dropped for length, the first
   * `train_examples_used` entries are the ones shown.
   */
  trainOrder: number[];
}

/** Probability that the colour map also moves colour 0 (the original's 0.1). */
export const SHUFFLE_BACKGROUND_PROBABILITY = 0.1;

/** Version tag mixed into the seed; changes only if the drawing scheme changes. */
const SCHEME = 'shardline/augment/v1';

/** The identity augmentation (used when augmentation is off). */
export function identityAugmentation(numTrain: number): Augmentation {
  return {
    index: 0,
    hflip: false,
    rot90: 0,
    colorMap: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    trainOrder: Array.from({ length: numTrain }, (_, i) => i),
  };
}

/**
 * The augmentation `index` of a task, a pure function of (`seed`, `taskKey`, `index`,
 * `numTrain`): the same task gets the same augmentations in any shard, worker or order.
 */
export function augmentationFor(
  seed: string | number,
  taskKey: string,
  index: number,
  numTrain: number,
): Augmentation {
  const variant = index % 8;
  const rng = Prng.fromKey(SCHEME, seed, taskKey, index);
  const colorMap =
    rng.nextFloat() < SHUFFLE_BACKGROUND_PROBABILITY
      ? rng.shuffle([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      : [0, ...rng.shuffle([1, 2, 3, 4, 5, 6, 7, 8, 9])];
  const trainOrder = rng.shuffle(Array.from({ length: numTrain }, (_, i) => i));
  return { index, hflip: variant >= 4, rot90: variant % 4, colorMap, trainOrder };
}
