import { defineConfig } from 'vitest/config';

// `npm run test:package`: the package as a user installs it (test/package/). Separate from `npm test`
// because packing (which builds) and installing from the tarball take over a minute.
export default defineConfig({
  test: {
    include: ['test/package/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 300_000,
  },
});
