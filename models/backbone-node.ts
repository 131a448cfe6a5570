/**
 * Loading a ViT backbone from a weights file in Node: models/backbone.ts on the file's bytes,
 * with zlib for compressed zip entries. Every error names the file.
 */
import type { Engine } from '../engine/engine.js';
import { type ArchRequest, type BackboneWeights, buildBackbone, type LoadedBackbone, parseBackboneWeights } from './backbone.js';
import { basename } from 'node:path';
import { nodeInflateRaw, readBytes } from './io/node-files.js';

/** Reads the weights file; every error names the file. */
export async function readBackboneWeights(path: string, opts: { checkpointKey?: string; maxBytes?: number } = {}): Promise<BackboneWeights> {
  try {
    const bytes = await readBytes(path);
    return parseBackboneWeights(bytes, { checkpointKey: opts.checkpointKey, name: basename(path), inflateRaw: nodeInflateRaw, maxBytes: opts.maxBytes });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const message = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'is a directory' : (err.message ?? String(e));
    throw new Error(`weights ${path}: ${message}`, { cause: e });
  }
}

/**
 * Reads the weights, resolves the architecture, builds the ViT and loads the weights strictly.
 * Errors name the file; a strict-loading error lists every missing, unexpected and mismatched key.
 */
export async function loadBackbone(engine: Engine, path: string, req: ArchRequest & { checkpointKey?: string; maxBytes?: number } = {}): Promise<LoadedBackbone> {
  const weights = await readBackboneWeights(path, { checkpointKey: req.checkpointKey, maxBytes: req.maxBytes });
  return buildBackbone(engine, weights, req, `weights ${path}`);
}
