/**
 * Child processes for kill tests: bundles a test's child script (TypeScript, from the current
 * sources) with esbuild into one .mjs the test can spawn with `node` and SIGKILL mid-run. Dawn's
 * native module (`webgpu`) cannot be bundled: it is imported by absolute path, since the bundle
 * lives in a temporary folder outside this package.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

/** Bundles `entry` (a .ts file URL) into `outfile`. */
export async function bundleChild(entry: URL, outfile: string): Promise<void> {
  const webgpu = pathToFileURL(fileURLToPath(new URL('../node_modules/webgpu/index.js', import.meta.url))).href;
  await build({
    entryPoints: [fileURLToPath(entry)],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    plugins: [
      {
        name: 'webgpu-absolute',
        setup(b) {
          b.onResolve({ filter: /^webgpu$/ }, () => ({ path: webgpu, external: true }));
        },
      },
    ],
    logLevel: 'warning',
  });
}
