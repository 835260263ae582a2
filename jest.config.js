// Two tiers (docs/conventions.md#two-tiers): `unit` needs nothing running; `integration` talks to the
// Firestore, Pub/Sub and Storage emulators that test/emulators/with-emulators.sh starts once.
const swc = [
  '@swc/jest',
  {
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
    module: { type: 'commonjs' },
    sourceMaps: 'inline',
  },
];

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      roots: ['<rootDir>/test/unit'],
      transform: { '^.+\\.ts$': swc },
      testEnvironmentOptions: { globalsCleanup: 'off' },
    },
    {
      displayName: 'integration',
      testEnvironment: 'node',
      roots: ['<rootDir>/test/integration'],
      transform: { '^.+\\.ts$': swc },
      testEnvironmentOptions: { globalsCleanup: 'off' },
    },
  ],
  // Per test. Generous because the machine is small (2 cores) and Firestore emulator
  // contention resolves in 2 s lock-timeout steps (docs/notes/emulators.md §1); speed is measured in
  // bench/, never asserted here.
  testTimeout: 180_000,
};
