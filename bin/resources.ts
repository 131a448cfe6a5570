/**
 * What a command opens and must close, whatever happens: the GPU engine, a backbone on it, and
 * datasets (an ImageFolder holds decode worker threads, which keep the process alive until they are
 * stopped). Every command opens these through the helpers here, so that an early error (a missing
 * weights file, a bad option found late) closes them too and the process exits.
 *
 * Order of release for the engine: first the pending GPU work is submitted and waited for, then the
 * things that use the device (a model, a trainer) are disposed, then the device is destroyed. Freeing
 * a buffer that recorded but unsubmitted work still uses makes Dawn print "used in submit while
 * destroyed" when the device flushes on destroy.
 */
import { init, type Engine } from '../index.js';
import type { ArchRequest, LoadedBackbone } from '../models/backbone.js';
import { loadBackbone } from '../models/backbone-node.js';
import type { Dataset } from '../train/data/dataset.js';
import { EmptyClassesError } from '../train/data/image-folder-node.js';
import { openDataset, type OpenDatasetOptions, resolveDataSpec } from '../train/data/open-node.js';
import type { Context } from './command.js';

/** Closers run when a command ends, the last registered first. */
export class Resources {
  private readonly closers: (() => unknown)[] = [];

  /** Registers `close` to run when the command ends. */
  defer(close: () => unknown): void {
    this.closers.push(close);
  }

  /** Runs every closer (each once, even if one throws); returns the errors. */
  async close(): Promise<unknown[]> {
    const errors: unknown[] = [];
    for (let c = this.closers.pop(); c; c = this.closers.pop()) {
      try {
        await c();
      } catch (e) {
        errors.push(e);
      }
    }
    return errors;
  }
}

/** Something that holds GPU memory until disposed. */
export interface Disposable {
  dispose(): void;
}

/** Submits and waits for recorded GPU work; a device that already failed has nothing to wait for. */
async function settle(wd: Engine): Promise<void> {
  try {
    await wd.sync();
  } catch {
    // The device is lost or reported an error: the command's own error says why.
  }
}

/**
 * Runs `fn` with a new engine; `own(x)` hands x (a model, a trainer) to the helper, which disposes
 * it after `fn`. On the way out, whatever the outcome: pending work settles, owned things are
 * disposed (last owned first), the device is destroyed.
 */
export async function withEngine<R>(fn: (wd: Engine, own: <T extends Disposable>(x: T) => T) => Promise<R>): Promise<R> {
  const wd = await init();
  const owned: Disposable[] = [];
  try {
    return await fn(wd, (x) => {
      owned.push(x);
      return x;
    });
  } finally {
    await settle(wd);
    for (let x = owned.pop(); x; x = owned.pop()) {
      try {
        x.dispose();
      } catch {
        // Disposing is best effort on the way out; the device goes next anyway.
      }
    }
    wd.destroy();
  }
}

/** Where the weights come from and which architecture the command line asks for. */
export interface BackboneRequest extends ArchRequest {
  weights: string;
  checkpointKey?: string;
}

/** A loaded backbone and the engine it lives on. */
export interface Backbone extends LoadedBackbone {
  wd: Engine;
}

/** init engine → load the backbone → `fn` → dispose the model and the engine (see withEngine). */
export async function withBackbone<R>(request: BackboneRequest, fn: (b: Backbone) => Promise<R>): Promise<R> {
  return withEngine(async (wd, own) => {
    const { weights, checkpointKey, ...arch } = request;
    const loaded = await loadBackbone(wd, weights, { ...arch, checkpointKey });
    own(loaded.model);
    return fn({ wd, ...loaded });
  });
}

/**
 * Opens a dataset from a command-line spec (paths relative to the command's working directory)
 * and closes it when the command ends. Warnings go to stderr. Empty class folders are explained
 * with the command-line option that keeps them (every command that opens datasets declares
 * --allow-empty-classes).
 */
export function openData(ctx: Context, spec: string, opts: Omit<OpenDatasetOptions, 'onWarning'>): Dataset {
  let ds: Dataset;
  try {
    ds = openDataset(resolveDataSpec(spec, ctx.cwd), { ...opts, onWarning: (m) => ctx.io.err(`warning: ${m}`) });
  } catch (e) {
    if (!(e instanceof EmptyClassesError)) throw e;
    throw new Error(`${EmptyClassesError.describe(e.root, e.classes)}: remove the empty folder${e.classes.length === 1 ? '' : 's'}, or pass --allow-empty-classes to keep ${e.classes.length === 1 ? 'it as a class' : 'them as classes'} without images`, { cause: e });
  }
  const closable = ds as Dataset & { close?: () => Promise<void> | void };
  if (typeof closable.close === 'function') ctx.resources.defer(() => closable.close!());
  return ds;
}
