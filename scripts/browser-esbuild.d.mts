// Types of scripts/browser-esbuild.mjs (imported by the browser tests).
import type { BuildOptions, Metafile, Plugin } from 'esbuild';

/** Swaps engine/node.ts and engine/node-gpu.ts for browser stubs. */
export function browserStubsPlugin(): Plugin;
/** Node built-ins, `webgpu` imports and Node-only sources in a bundle (empty when clean). */
export function nodeLeaks(metafile: Metafile): string[];
/** Options shared by every browser bundle. */
export const browserOptions: BuildOptions & { metafile: true };
