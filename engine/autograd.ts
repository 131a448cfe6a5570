/**
 * Reverse-mode automatic differentiation.
 *
 * Every op whose inputs require gradients attaches a `GradNode` to its output: the inputs and a
 * closure that maps the output's gradient to the inputs' gradients (the vector-Jacobian product).
 * The closure captures what the backward needs (the "saved" tensors) directly.
 *
 * `backward(root)` orders the graph with an iterative depth-first search (no recursion: graphs of
 * thousands of ops do not blow the stack), walks it in reverse topological order, accumulates
 * gradients of tensors used more than once, and adds the result into `.grad` of leaves
 * (`requiresGrad` tensors that no op produced). Intermediate gradients are disposed as soon as they
 * have been propagated. Backward closures run with gradient recording off (no higher-order grads).
 *
 * Invariant: leaf gradients accumulate with += across `backward()` calls until `zeroGrad`.
 */
import type { Tensor } from './tensor.js';

export interface GradNode {
  /** The op's name, for errors and debugging. */
  readonly name: string;
  readonly inputs: readonly (Tensor | null)[];
  /** Returns one gradient per input (null where the input needs none). */
  readonly backward: (grad: Tensor) => readonly (Tensor | null | undefined)[];
}

/** Tracks whether ops record gradient nodes. Per engine. */
export class GradMode {
  private disabled = 0;
  get enabled(): boolean {
    return this.disabled === 0;
  }
  /** Runs `fn` with recording off (sync or async). */
  run<R>(fn: () => R): R {
    this.disabled++;
    let r: R;
    try {
      r = fn();
    } catch (e) {
      this.disabled--;
      throw e;
    }
    if (r instanceof Promise) return r.finally(() => this.disabled--) as R;
    this.disabled--;
    return r;
  }
}

/** Attaches a gradient node to `out` when recording is on and some input requires a gradient. */
export function record(
  out: Tensor,
  name: string,
  inputs: readonly (Tensor | null)[],
  backward: (grad: Tensor) => readonly (Tensor | null | undefined)[],
): Tensor {
  if (!out.engine.grad.enabled) return out;
  if (!inputs.some((t) => t?.requiresGrad)) return out;
  out.requiresGrad = true;
  out.gradFn = { name, inputs, backward };
  return out;
}

/** Tensors reachable from `root` through grad nodes, in topological order (inputs first). */
function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.gradFn?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const child = inputs[i];
      if (child && child.requiresGrad && !visited.has(child)) {
        visited.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

/**
 * Back-propagates from `root`. `grad` defaults to ones (a scalar root needs none).
 * Leaves receive `.grad` (kept alive outside scopes); the graph is released afterwards.
 */
export function backward(root: Tensor, grad?: Tensor): void {
  const e = root.engine;
  if (!root.requiresGrad) {
    throw new Error('backward(): the tensor does not require a gradient (no input had requiresGrad, or it was made under noGrad)');
  }
  if (!grad && root.size !== 1) {
    throw new Error(`backward(): the root has shape [${root.shape.join(', ')}]; pass a gradient of that shape or reduce it to a scalar first`);
  }
  const order = topoOrder(root);
  e.grad.run(() => {
    const grads = new Map<Tensor, Tensor>();
    grads.set(root, grad ?? e.ones(root.shape));
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.gradFn;
      if (!node) {
        // A leaf: accumulate into .grad.
        if (t.grad) {
          const sum = t.grad.add(g);
          t.grad.dispose();
          t.grad = e.keep(sum);
        } else {
          t.grad = e.keep(g === grad ? g.clone() : g);
        }
        if (g !== t.grad && g !== grad) g.dispose();
        continue;
      }
      const inGrads = node.backward(g);
      if (inGrads.length !== node.inputs.length) {
        throw new Error(`internal: backward of '${node.name}' returned ${inGrads.length} gradients for ${node.inputs.length} inputs`);
      }
      // A closure may return `g` itself (or one tensor for two inputs): every map entry must own
      // its tensor, so a tensor already stored is cloned.
      const owned = new Set<Tensor>();
      for (let j = 0; j < node.inputs.length; j++) {
        const x = node.inputs[j];
        let gx = inGrads[j];
        if (!x || !gx || !x.requiresGrad) continue;
        if (gx.shape.length !== x.shape.length || gx.shape.some((d, k) => d !== x.shape[k])) {
          throw new Error(
            `internal: backward of '${node.name}' gave a gradient of shape [${gx.shape.join(', ')}] for an input of shape [${x.shape.join(', ')}]`,
          );
        }
        const prev = grads.get(x);
        if (prev) {
          grads.set(x, prev.add(gx));
          prev.dispose();
        } else {
          if (owned.has(gx) || gx === grad) gx = gx.clone();
          grads.set(x, gx);
          owned.add(gx);
        }
      }
      // Dispose what was not stored: g itself and any returned gradient that was only added in.
      for (const gx of new Set([g, ...inGrads])) {
        if (gx && !owned.has(gx) && gx !== grad && !gx.disposed) gx.dispose();
      }
      // Release the graph: the node's closure holds the saved tensors.
      t.gradFn = null;
    }
  });
}
