// esbuild helpers for code that runs in browsers (the package's browser bundle, the demo's page and
// worker, the kernel test suite bundled for a page):
//   browserStubsPlugin()   replaces the two Node-only engine modules with browser stubs:
//                          engine/node.ts (installs AsyncLocalStorage; browsers keep the scope
//                          stack) -> an empty module, and engine/node-gpu.ts (Dawn's bindings) ->
//                          a module whose nodeGpu() throws "this browser has no WebGPU", which
//                          the device layer turns into a NoAdapterError. Both are only reached
//                          through dynamic imports guarded by "running in Node" / "no
//                          navigator.gpu", so the API is the same in both worlds.
//   nodeLeaks(metafile)    the Node built-ins, `webgpu` imports and Node-only sources that
//                          survived into a bundle (must be empty: the build fails otherwise).
//   browserOptions         the esbuild options every browser bundle shares.

import { resolve } from 'node:path';

/** @typedef {import('esbuild').Plugin} Plugin */
/** @typedef {import('esbuild').Metafile} Metafile */

const NODE_STUB = `// Browser stub of engine/node.ts: no AsyncLocalStorage; scopes use their stack.
export {};
`;

const NODE_GPU_STUB = `// Browser stub of engine/node-gpu.ts: Dawn's bindings exist only in Node.
export async function nodeGpu() {
  throw new Error('navigator.gpu is missing: this browser has no WebGPU, or it is turned off');
}
`;

/**
 * An esbuild plugin that swaps engine/node.ts and engine/node-gpu.ts for browser stubs (see the
 * file header).
 * @returns {Plugin}
 */
export function browserStubsPlugin() {
  return {
    name: 'webdino-browser-stubs',
    setup(build) {
      build.onResolve({ filter: /(^|\/)node(-gpu)?\.js$/ }, (args) => {
        const m = /[\\/]engine[\\/](node(-gpu)?)\.js$/.exec(resolve(args.resolveDir, args.path));
        if (!m) return undefined;
        return { path: `engine/${m[1]}`, namespace: 'webdino-browser-stub' };
      });
      build.onLoad({ filter: /.*/, namespace: 'webdino-browser-stub' }, (args) => ({
        contents: args.path === 'engine/node' ? NODE_STUB : NODE_GPU_STUB,
        loader: 'js',
      }));
    },
  };
}

/**
 * What in a bundle's metafile would break it in a browser: imports of `node:*`, Node built-in
 * names, or `webgpu` left in any output, and Node-only sources (`*-node.ts`, engine/node*.ts,
 * the webgpu package) among the inputs. Returns one line per problem (empty when clean).
 * @param {Metafile} metafile
 * @returns {string[]}
 */
export function nodeLeaks(metafile) {
  const builtins = /^(node:|(fs|path|os|url|util|crypto|stream|zlib|worker_threads|child_process|async_hooks|module|events|buffer|process)(\/|$))/;
  const problems = [];
  for (const [out, o] of Object.entries(metafile.outputs)) {
    for (const imp of o.imports) {
      if (builtins.test(imp.path) || imp.path === 'webgpu' || imp.path.startsWith('webgpu/')) {
        problems.push(`${out} imports '${imp.path}' (${imp.kind})`);
      }
    }
  }
  for (const input of Object.keys(metafile.inputs)) {
    if (/-node\.ts$/.test(input) || /(^|\/)engine\/node(-gpu)?\.ts$/.test(input) || /node_modules\/webgpu\//.test(input)) {
      problems.push(`Node-only source bundled: ${input}`);
    }
  }
  return problems;
}

/** The esbuild options shared by every browser bundle (ESM, ES2022, platform browser, stubs). */
export const browserOptions = {
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  metafile: true,
  logLevel: 'warning',
  plugins: [browserStubsPlugin()],
};
