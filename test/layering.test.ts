/**
 * The layering of the source tree, read from the imports of every source file.
 *
 * | folder        | may import (values)                                                        |
 * |---------------|-----------------------------------------------------------------------------|
 * | kernels/      | kernels/*, engine/device, engine/shape (`import type` of engine/* is fine)   |
 * | engine/       | engine/*; kernels/* from the ops layer only (engine/ops/*, engine/optim.ts)  |
 * | models/       | models/*, engine/*, kernels/*                                               |
 * | train/data/   | train/data/*, models/io/*, engine/*, kernels/*                              |
 * | eval/         | eval/*, train/data/*, models/*, engine/*, kernels/*: never the trainer      |
 * | train/        | everything above, eval/ included                                            |
 * | index.ts      | the library folders (not bin/, web/, bench/, test/)                         |
 * | bin/ web/ bench/ scripts/ | anything                                                        |
 *
 * The folder rules hold for type imports too (an eval file naming the trainer's types is a
 * layering error as much as calling it), except kernels/, which may name the engine's types.
 * Independently, no value-import cycle may exist anywhere in the tree: module evaluation order must
 * not depend on which file a program enters by.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const SOURCE_DIRS = ['kernels', 'engine', 'models', 'train', 'eval', 'bin', 'web', 'bench', 'scripts'];

/** One import or re-export of a relative module. */
export interface ImportEdge {
  from: string;
  to: string;
  /** True for `import type`, `export type` and imports whose every specifier is `type`. */
  typeOnly: boolean;
}

function listSources(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) listSources(p, out);
    else if (/\.(ts|mts|mjs)$/.test(e.name) && !/\.d\.m?ts$/.test(e.name)) out.push(p);
  }
  return out;
}

/**
 * The relative imports of one file's text. Handles `import … from`, `export … from`, side-effect
 * `import '…'` and dynamic `import('…')` (a value edge: it evaluates the module).
 */
export function parseImports(file: string, text: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  const stripped = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const statement = /(?:^|[\n;])\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"](\.{1,2}\/[^'"]+)['"]/g;
  for (const m of stripped.matchAll(statement)) {
    const [, kind, typeKw, clause, spec] = m;
    let typeOnly = Boolean(typeKw);
    const braces = /\{([^}]*)\}/.exec(clause);
    if (!typeOnly && braces && !/^\s*[\w$]+\s*,/.test(clause) && !/\*/.test(clause)) {
      const names = braces[1].split(',').map((s) => s.trim()).filter(Boolean);
      typeOnly = names.length > 0 && names.every((n) => n.startsWith('type '));
    }
    if (kind === 'export' && !braces && !/\*/.test(clause)) continue;
    edges.push({ from: file, to: resolveSpec(file, spec), typeOnly });
  }
  for (const m of stripped.matchAll(/(?:^|[\n;])\s*import\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
    edges.push({ from: file, to: resolveSpec(file, m[1]), typeOnly: false });
  }
  for (const m of stripped.matchAll(/\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g)) {
    edges.push({ from: file, to: resolveSpec(file, m[1]), typeOnly: false });
  }
  return edges;
}

function resolveSpec(file: string, spec: string): string {
  return relative(ROOT, resolve(ROOT, dirname(file), spec)).replace(/\.m?js$/, '.ts');
}

const under = (path: string, dir: string): boolean => path === dir || path.startsWith(`${dir}/`);

/** The layer of a source path, as the table in the header names them. */
function layer(path: string): string {
  if (under(path, 'train/data')) return 'train/data';
  if (under(path, 'models/io')) return 'models/io';
  if (path === 'index.ts') return 'index';
  return path.split('/')[0];
}

/** Why an edge breaks the table, or null when it is allowed. */
export function forbidden(e: ImportEdge): string | null {
  const from = layer(e.from);
  const to = layer(e.to);
  const app = new Set(['bin', 'web', 'bench', 'scripts', 'test']);
  if (app.has(from)) return null;
  if (app.has(to)) return `${from} may not import ${to}/ (application code)`;
  const models = ['models', 'models/io'];
  const allowed: Record<string, string[]> = {
    kernels: ['kernels'],
    engine: ['engine', 'kernels'],
    'models/io': ['models/io'],
    models: ['models', 'models/io', 'engine', 'kernels'],
    'train/data': ['train/data', 'models/io', 'engine', 'kernels'],
    eval: ['eval', 'train/data', ...models, 'engine', 'kernels'],
    train: ['train', 'train/data', 'eval', ...models, 'engine', 'kernels'],
    index: ['train', 'train/data', 'eval', ...models, 'engine', 'kernels'],
  };
  if (from === 'kernels' && to === 'engine') {
    if (e.typeOnly) return null;
    if (e.to === 'engine/device.ts' || e.to === 'engine/shape.ts') return null;
    return `kernels/ may import only engine/device and engine/shape as values (not ${e.to})`;
  }
  if (from === 'engine' && to === 'kernels' && !(under(e.from, 'engine/ops') || e.from === 'engine/optim.ts')) {
    return `only the ops layer (engine/ops/, engine/optim.ts) may import kernels/, not ${e.from}`;
  }
  if (!(allowed[from] ?? []).includes(to)) return `${from === 'index' ? 'index.ts' : `${from}/`} may not import ${to}/`;
  return null;
}

/** Every cycle of value imports (strongly connected components of size > 1, or self-loops). */
export function valueCycles(edges: readonly ImportEdge[]): string[][] {
  const adj = new Map<string, string[]>();
  for (const e of edges) {
    if (e.typeOnly) continue;
    if (!adj.has(e.from)) adj.set(e.from, []);
    adj.get(e.from)!.push(e.to);
  }
  // Tarjan's algorithm, iterative.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  let next = 0;
  for (const start of adj.keys()) {
    if (index.has(start)) continue;
    const work: [string, number][] = [[start, 0]];
    index.set(start, next);
    low.set(start, next++);
    stack.push(start);
    onStack.add(start);
    while (work.length) {
      const top = work[work.length - 1];
      const [v, i] = top;
      const succ = adj.get(v) ?? [];
      if (i < succ.length) {
        top[1]++;
        const w = succ[i];
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push([w, 0]);
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
      } else {
        work.pop();
        if (work.length) {
          const u = work[work.length - 1][0];
          low.set(u, Math.min(low.get(u)!, low.get(v)!));
        }
        if (low.get(v) === index.get(v)) {
          const comp: string[] = [];
          let w: string;
          do {
            w = stack.pop()!;
            onStack.delete(w);
            comp.push(w);
          } while (w !== v);
          if (comp.length > 1 || succ.includes(v)) out.push(comp.sort());
        }
      }
    }
  }
  return out;
}

function treeEdges(): ImportEdge[] {
  const files = SOURCE_DIRS.flatMap((d) => listSources(join(ROOT, d))).concat(join(ROOT, 'index.ts'));
  return files.flatMap((f) => {
    const rel = relative(ROOT, f);
    return parseImports(rel, readFileSync(f, 'utf8'));
  });
}

describe('layering', () => {
  const edges = treeEdges();

  it('reads the imports of the tree (sanity: known edges are seen, type-only ones as such)', () => {
    expect(edges.length).toBeGreaterThan(200);
    expect(edges.some((e) => e.from === 'engine/engine.ts' && e.to === 'engine/device.ts' && !e.typeOnly)).toBe(true);
    expect(edges.some((e) => e.from === 'kernels/common.ts' && e.to === 'engine/tensor.ts' && e.typeOnly)).toBe(true);
  });

  it('has no forbidden edge', () => {
    const bad = edges.map((e) => [e, forbidden(e)] as const).filter(([, why]) => why !== null);
    expect(bad.map(([e, why]) => `${e.from} -> ${e.to}${e.typeOnly ? ' (type)' : ''}: ${why}`)).toEqual([]);
  });

  it('has no value-import cycle anywhere', () => {
    expect(valueCycles(edges)).toEqual([]);
  });

  it('the checker itself: catches a forbidden edge, a cycle, and tells type from value imports', () => {
    const src = [
      "import { record } from '../engine/autograd.js';",
      "import type { Tensor } from '../engine/tensor.js';",
      "import { type Engine } from '../engine/engine.js';",
      "import { type Shape, fmt } from '../engine/shape.js';",
      "export { DinoTrainer } from '../train/trainer.js';",
      "export type { X } from '../train/trainer.js';",
      "const m = await import('../eval/knn.js');",
    ].join('\n');
    const parsed = parseImports('kernels/x.ts', src);
    expect(parsed.map((e) => [e.to, e.typeOnly])).toEqual([
      ['engine/autograd.ts', false],
      ['engine/tensor.ts', true],
      ['engine/engine.ts', true],
      ['engine/shape.ts', false],
      ['train/trainer.ts', false],
      ['train/trainer.ts', true],
      ['eval/knn.ts', false],
    ]);
    expect(parsed.map(forbidden).map((w) => w !== null)).toEqual([true, false, false, false, true, true, true]);
    expect(forbidden({ from: 'eval/knn.ts', to: 'train/trainer.ts', typeOnly: true })).toMatch(/eval\/ may not import train\//);
    expect(forbidden({ from: 'eval/knn.ts', to: 'train/data/dataset.ts', typeOnly: false })).toBeNull();
    expect(forbidden({ from: 'engine/tensor.ts', to: 'kernels/matmul.ts', typeOnly: false })).toMatch(/ops layer/);
    expect(forbidden({ from: 'models/vit.ts', to: 'bin/cli.ts', typeOnly: false })).toMatch(/application/);
    const cyc = valueCycles([
      { from: 'a.ts', to: 'b.ts', typeOnly: false },
      { from: 'b.ts', to: 'c.ts', typeOnly: false },
      { from: 'c.ts', to: 'a.ts', typeOnly: false },
      { from: 'c.ts', to: 'd.ts', typeOnly: false },
      { from: 'd.ts', to: 'c.ts', typeOnly: true },
    ]);
    expect(cyc).toEqual([['a.ts', 'b.ts', 'c.ts']]);
  });
});
