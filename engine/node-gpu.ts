/**
 * Node only: WebGPU through Dawn's bindings (the `webgpu` package). Imported dynamically by the
 * device layer so that browser bundles never reference it.
 */
/// <reference types="@webgpu/types" />

let cached: GPU | null = null;

/** Creates (once per process) Dawn's GPU object and installs WebGPU's constants (GPUBufferUsage…). */
export async function nodeGpu(toggles: string[]): Promise<GPU> {
  if (cached) return cached;
  let mod: { create: (flags: string[]) => GPU; globals: Record<string, unknown> };
  try {
    mod = (await import('webgpu')) as unknown as typeof mod;
  } catch (e) {
    // webdino lists `webgpu` as an optional dependency: `npm install --omit=optional` skips it, and a
    // failed install of it does not fail webdino's. Say which package to install.
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_MODULE_NOT_FOUND' && /'webgpu'/.test(err.message)) {
      throw new Error("the 'webgpu' package (Dawn for Node) is not installed: run `npm install webgpu` (an optional dependency of webdino, skipped by --omit=optional)");
    }
    throw new Error(`the 'webgpu' package (Dawn for Node) could not be loaded (reinstall it: \`npm install webgpu\`): ${err.message}`);
  }
  // Dawn's bindings need GPUBufferUsage, GPUMapMode... as globals, as browsers have them.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  cached = mod.create(toggles);
  return cached;
}
