/**
 * Scopes: every tensor created while a scope is active belongs to it and is disposed when the scope
 * ends, except the values the scope returns and tensors marked with `keep()`. Nothing relies on
 * garbage collection to free GPU memory.
 *
 * Async safety: in Node the active scope follows the async call chain (AsyncLocalStorage), so two
 * concurrent `await scope(async () => …)` never capture each other's tensors. Where no async
 * context exists (browsers today), the active scope is a stack, which is exact for scopes that do not
 * run concurrently on the same engine (one training loop, or `await`ed one after another).
 */

export interface Disposable {
  dispose(): void;
  /** True once disposed. */
  readonly disposed: boolean;
}

export class Scope {
  readonly tracked = new Set<Disposable>();
  constructor(readonly parent: Scope | null) {}
}

interface ContextStore {
  getStore(): Scope | undefined;
  run<R>(store: Scope, fn: () => R): R;
}

let asyncContext: ContextStore | null = null;
const stack: Scope[] = [];

/** Node installs AsyncLocalStorage here (see engine/node.ts); browsers keep the stack. */
export function installAsyncContext(ctx: ContextStore): void {
  asyncContext = ctx;
}

export function currentScope(): Scope | null {
  if (asyncContext) return asyncContext.getStore() ?? null;
  return stack.length ? stack[stack.length - 1] : null;
}

/** Registers a new tensor with the active scope (no-op outside scopes). */
export function track(t: Disposable): void {
  currentScope()?.tracked.add(t);
}

/** Removes `t` from every active scope so it outlives them; returns it. */
export function keep<T extends Disposable>(t: T): T {
  for (let s = currentScope(); s; s = s.parent) s.tracked.delete(t);
  return t;
}

/** Collects the disposables contained in a scope's return value (arrays, plain objects, one level deep or more). */
function collect(value: unknown, out: Set<Disposable>, depth = 0): void {
  if (value == null || depth > 4) return;
  if (typeof value === 'object' && 'dispose' in (value as object) && 'disposed' in (value as object)) {
    out.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) for (const v of value) collect(v, out, depth + 1);
  else if (value instanceof Map) for (const v of value.values()) collect(v, out, depth + 1);
  else if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as object)) collect(v, out, depth + 1);
  }
}

function finish(scope: Scope, result: unknown): void {
  const kept = new Set<Disposable>();
  collect(result, kept);
  for (const t of scope.tracked) {
    if (kept.has(t)) {
      scope.parent?.tracked.add(t);
    } else if (!t.disposed) {
      t.dispose();
    }
  }
  scope.tracked.clear();
}

/**
 * Runs `fn` in a new scope. Tensors created inside are disposed when it returns (or throws), except
 * those in its return value, which move to the enclosing scope. Works with sync and async functions.
 */
export function scope<R>(fn: () => R): R {
  const s = new Scope(currentScope());
  const run = (): R => {
    let result: R;
    try {
      result = fn();
    } catch (e) {
      finish(s, undefined);
      throw e;
    }
    if (result instanceof Promise) {
      return result.then(
        (v) => {
          finish(s, v);
          return v;
        },
        (e) => {
          finish(s, undefined);
          throw e;
        },
      ) as R;
    }
    finish(s, result);
    return result;
  };
  if (asyncContext) return asyncContext.run(s, run);
  stack.push(s);
  let popped = false;
  const pop = () => {
    if (!popped) {
      popped = true;
      const i = stack.lastIndexOf(s);
      if (i >= 0) stack.splice(i, 1);
    }
  };
  try {
    const r = run();
    if (r instanceof Promise) return r.finally(pop) as R;
    pop();
    return r;
  } catch (e) {
    pop();
    throw e;
  }
}
