import { configDefaults, defineConfig } from 'vitest/config';

// One GPU device per test file; on a 2-core CPU Vulkan driver, files run one at a time so their
// kernels do not fight over the cores (lavapipe already uses every core for one dispatch).
// test/package/ (pack, install from the tarball, run there: over a minute) has its own config and
// script: `npm run test:package` (vitest.package.config.ts).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: [...configDefaults.exclude, 'test/package/**'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
