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
    throw new Error(`the 'webgpu' package (Dawn for Node) could not be loaded: ${(e as Error).message}`);
  }
  // Dawn's bindings need GPUBufferUsage, GPUMapMode... as globals, as browsers have them.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  cached = mod.create(toggles);
  return cached;
}
