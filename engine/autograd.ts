/**
 * Reverse-mode automatic differentiation.
 *
 * Every op whose inputs require gradients attaches a `GradNode` to its output (`record`): its
 * inputs, a closure that maps the output's gradient to the inputs' gradients (the vector-Jacobian
 * product), and the tensors the op made for that closure (`saved`: row statistics, a
 * pre-activation, views). The closure may also read the op's inputs and output; those belong to
 * the caller and are never freed here.
 *
 * `backward(root)` orders the graph with an iterative depth-first search (no recursion: graphs of
 * thousands of ops do not blow the stack), walks it in reverse topological order, accumulates
 * gradients of tensors used more than once, and adds the result into `.grad` of leaves
 * (`requiresGrad` tensors that no op produced). Intermediate gradients are disposed as soon as they
 * have been propagated. Backward closures run with gradient recording off (no higher-order grads).
 *
 * Invariants
 * - Leaf gradients accumulate with += across `backward()` calls until `zeroGrad`.
 * - A gradient has its tensor's dtype (f16 for an f16 activation, f32 for an f32 parameter read
 *   through a cast): a rule whose kernels gave the other dtype is converted before it is stored.
 * - A graph is used once: after its backward every node is released (closure dropped, saved
 *   tensors freed), and a second backward through it throws, as in PyTorch. A node is also
 *   released when its output is disposed, and its saved tensors are freed at once when nothing
 *   is recorded (no grad mode, or no input requiring a gradient).
 * - Every tensor on a path from the root to a leaf must be alive when backward starts: a disposed
 *   one cannot pass the gradient on, and backward throws naming it before computing anything
 *   (instead of silently treating it as a leaf and leaving the true leaves without gradients).
 */
import { keep } from './scope.js';
import { fmt } from './shape.js';
import type { Tensor } from './tensor.js';

/** What an op hands to `record`. */
export interface GradRecord {
  /** The op's name, for errors. */
  readonly name: string;
  /** The inputs gradients flow to, in the order `backward` returns theirs. */
  readonly inputs: readonly (Tensor | null)[];
  /**
   * Tensors the op made only for its backward. The node owns them: autograd frees them after the
   * backward, when the output is disposed, or at once when nothing is recorded. Never the op's
   * inputs or its output.
   */
  readonly saved?: readonly Tensor[];
  /** Returns one gradient per input (null where the input needs none). */
  readonly backward: (grad: Tensor) => readonly (Tensor | null | undefined)[];
}

/** The record of the op that produced a tensor, until the graph is released. */
export class GradNode {
  readonly name: string;
  private node: GradRecord | null;

  constructor(node: GradRecord) {
    this.name = node.name;
    this.node = node;
  }

  /** True once the backward ran (or the output was disposed): closure and saved tensors are gone. */
  get released(): boolean {
    return this.node === null;
  }

  get inputs(): readonly (Tensor | null)[] {
    return this.node?.inputs ?? [];
  }

  /** Runs the vector-Jacobian product. */
  backward(grad: Tensor): readonly (Tensor | null | undefined)[] {
    if (!this.node) throw new Error(`internal: backward of '${this.name}' after its graph was released`);
    return this.node.backward(grad);
  }

  /** Frees the saved tensors and drops the closure (and with it the references to inputs). Idempotent. */
  release(): void {
    if (!this.node) return;
    for (const t of this.node.saved ?? []) t.dispose();
    this.node = null;
  }
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

/**
 * Attaches a gradient node to `out` when recording is on and some input requires a gradient;
 * otherwise frees `node.saved` at once. Returns `out`. The saved tensors leave their scopes: the
 * node owns them, and frees them when it is released (after the backward, or with `out`).
 */
export function record(out: Tensor, node: GradRecord): Tensor {
  const saved = node.saved ?? [];
  if (!out.engine.grad.enabled || !node.inputs.some((t) => t?.requiresGrad)) {
    for (const t of saved) t.dispose();
    return out;
  }
  for (const t of saved) keep(t);
  out.requiresGrad = true;
  out.gradFn = new GradNode(node);
  return out;
}

/** Throws unless `t` can pass a gradient on: alive, and its graph not yet used by a backward. */
function checkOnPath(t: Tensor, consumer: GradNode | null, index: number): void {
  const what = `tensor ${fmt(t.shape)} ('${t.label}')${consumer ? `, input ${index + 1} of '${consumer.name}',` : ''}`;
  if (t.disposed) {
    throw new Error(
      `backward(): ${what} was disposed before backward(), so the gradient cannot flow through it; ` +
        'keep the tensors between the leaves and the loss alive until backward() has run (end their scope after it)',
    );
  }
  if (t.gradFn?.released) {
    throw new Error(
      `backward(): ${what} was made by '${t.gradFn.name}', whose graph was already released by an earlier backward(); ` +
        'a graph back-propagates once: run the forward again',
    );
  }
}

/**
 * Tensors reachable from `root` through grad nodes, in topological order (inputs first). Throws
 * (before anything is computed) when a tensor on the way was disposed or its graph released.
 */
function topoOrder(root: Tensor): Tensor[] {
  checkOnPath(root, null, 0);
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
        checkOnPath(child, t.gradFn, i);
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
      const inputs = node.inputs;
      const inGrads = node.backward(g);
      // The graph is used once: what the op saved for this backward is freed right away.
      node.release();
      if (inGrads.length !== inputs.length) {
        throw new Error(`internal: backward of '${node.name}' returned ${inGrads.length} gradients for ${inputs.length} inputs`);
      }
      // A closure may return `g` itself (or one tensor for two inputs): every map entry must own
      // its tensor, so a tensor already stored is cloned.
      const owned = new Set<Tensor>();
      for (let j = 0; j < inputs.length; j++) {
        const x = inputs[j];
        let gx = inGrads[j];
        if (!x || !gx || !x.requiresGrad) continue;
        if (gx.shape.length !== x.shape.length || gx.shape.some((d, k) => d !== x.shape[k])) {
          throw new Error(
            `internal: backward of '${node.name}' gave a gradient of shape [${gx.shape.join(', ')}] for an input of shape [${x.shape.join(', ')}]`,
          );
        }
        // A gradient has its input's dtype (as in PyTorch): the gradient of an f16 activation is
        // stored in f16, that of an f32 master weight read through a cast in f32. A rule whose
        // kernels computed it in the other dtype (an f16 operand of an f32 op) is converted here.
        // The rule's own tensor is then freed by the disposal loop below (it is not stored).
        const converted = gx.dtype !== x.dtype ? gx.cast(x.dtype) : null;
        if (converted) gx = converted;
        const prev = grads.get(x);
        if (prev) {
          grads.set(x, prev.add(gx));
          prev.dispose();
          converted?.dispose();
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
    }
  });
  // Nodes that received no gradient (an input whose rule returned none) are part of the graph too.
  for (const t of order) t.gradFn?.release();
}
