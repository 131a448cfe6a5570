/**
 * A browser stand-in for the parts of 'vitest' that the kernel test files use, so that the SAME
 * test/kernels/*.test.ts files run in a page: the conformance bundles (test/browser/conformance.ts)
 * alias 'vitest' to this module.
 *
 * - `expect` is Vitest's own: chai with @vitest/expect's Jest matchers, as Vitest builds it, so
 *   assertions behave exactly as under Node (same matchers, same messages).
 * - `describe`, `it`/`test` (with `.each`, `.skip`, `.only`, `.skipIf`, `.runIf`, `.todo`) and the
 *   four hooks only register; {@link runRegistered} then runs the tree in declaration order,
 *   hooks around it, and returns one result per test. No Node built-ins.
 *
 * Not supported (the kernel tests do not use them): `vi` mocks, snapshots, concurrency, per-test
 * timeouts (the Node side bounds the whole page; see test/browser/conformance.test.ts).
 */
import { chai, JestAsymmetricMatchers, JestChaiExpect, JestExtend, setState } from '@vitest/expect';

chai.use(JestExtend);
chai.use(JestChaiExpect);
chai.use(JestAsymmetricMatchers);

type AnyFn = (...args: never[]) => unknown;
type Body = () => unknown;

/** Vitest's `expect` (chai + Jest matchers); `expect(value, message)` as in Vitest. */
export const expect = ((value: unknown, message?: string) => chai.expect(value, message)) as unknown as Chai.ExpectStatic;
Object.assign(expect, chai.expect);
setState(
  {
    assertionCalls: 0,
    isExpectingAssertions: false,
    isExpectingAssertionsError: null,
    expectedAssertionsNumber: null,
    expectedAssertionsNumberErrorGen: null,
    currentTestName: '',
    testPath: 'browser',
  } as never,
  expect as never,
);

interface TestCase {
  name: string;
  fn: Body | null;
  mode: 'run' | 'skip' | 'only' | 'todo';
}

interface Suite {
  name: string;
  parent: Suite | null;
  mode: 'run' | 'skip' | 'only';
  children: (Suite | TestCase)[];
  beforeAll: Body[];
  afterAll: Body[];
  beforeEach: Body[];
  afterEach: Body[];
}

const newSuite = (name: string, parent: Suite | null, mode: Suite['mode']): Suite => ({
  name,
  parent,
  mode,
  children: [],
  beforeAll: [],
  afterAll: [],
  beforeEach: [],
  afterEach: [],
});

const root = newSuite('', null, 'run');
let current = root;
let collecting = true;

/** printf-style test names as Vitest formats them: %s %d %i %f %j %o %O %%, and $key / $0. */
function formatName(template: string, args: unknown[], index: number): string {
  let i = 0;
  let out = template.replace(/%[sdifjoO#%]/g, (m) => {
    if (m === '%%') return '%';
    if (m === '%#') return String(index);
    const v = args[i++];
    switch (m) {
      case '%s':
        return typeof v === 'string' ? v : String(v);
      case '%d':
      case '%i':
        return String(Math.trunc(Number(v)));
      case '%f':
        return String(Number(v));
      default:
        try {
          return JSON.stringify(v);
        } catch {
          return String(v);
        }
    }
  });
  const obj = args.length === 1 && args[0] !== null && typeof args[0] === 'object' ? (args[0] as Record<string, unknown>) : null;
  if (obj) out = out.replace(/\$([A-Za-z_]\w*)/g, (m, k: string) => (k in obj ? String(obj[k]) : m));
  return out;
}

function addTest(name: string, fn: Body | null, mode: TestCase['mode']): void {
  if (!collecting) throw new Error(`vitest-shim: it('${name}') called while tests run`);
  current.children.push({ name, fn, mode });
}

function addSuite(name: string, fn: Body, mode: Suite['mode']): void {
  const s = newSuite(name, current, mode);
  current.children.push(s);
  const saved = current;
  current = s;
  try {
    const r = fn();
    if (r instanceof Promise) throw new Error(`vitest-shim: describe('${name}') must not be async`);
  } finally {
    current = saved;
  }
}

/** Spreads an `.each` row into arguments as Vitest does: arrays are spread, other values passed alone. */
const rowArgs = (row: unknown): unknown[] => (Array.isArray(row) ? row : [row]);

interface TestApi {
  (name: string, fn?: Body, timeout?: number): void;
  skip(name: string, fn?: Body, timeout?: number): void;
  only(name: string, fn?: Body, timeout?: number): void;
  todo(name: string): void;
  skipIf(cond: unknown): (name: string, fn?: Body, timeout?: number) => void;
  runIf(cond: unknown): (name: string, fn?: Body, timeout?: number) => void;
  each(table: readonly unknown[]): (name: string, fn: AnyFn, timeout?: number) => void;
}

function makeTest(): TestApi {
  const t = ((name: string, fn?: Body) => addTest(name, fn ?? null, fn ? 'run' : 'todo')) as TestApi;
  t.skip = (name, fn) => addTest(name, fn ?? null, 'skip');
  t.only = (name, fn) => addTest(name, fn ?? null, 'only');
  t.todo = (name) => addTest(name, null, 'todo');
  t.skipIf = (cond) => (name, fn) => addTest(name, fn ?? null, cond ? 'skip' : 'run');
  t.runIf = (cond) => (name, fn) => addTest(name, fn ?? null, cond ? 'run' : 'skip');
  t.each = (table) => (name, fn) => {
    table.forEach((row, i) => {
      const args = rowArgs(row);
      addTest(formatName(name, args, i), () => (fn as (...a: unknown[]) => unknown)(...args), 'run');
    });
  };
  return t;
}

interface DescribeApi {
  (name: string, fn: Body): void;
  skip(name: string, fn: Body): void;
  only(name: string, fn: Body): void;
  skipIf(cond: unknown): (name: string, fn: Body) => void;
  runIf(cond: unknown): (name: string, fn: Body) => void;
  each(table: readonly unknown[]): (name: string, fn: AnyFn) => void;
}

function makeDescribe(): DescribeApi {
  const d = ((name: string, fn: Body) => addSuite(name, fn, 'run')) as DescribeApi;
  d.skip = (name, fn) => addSuite(name, fn, 'skip');
  d.only = (name, fn) => addSuite(name, fn, 'only');
  d.skipIf = (cond) => (name, fn) => addSuite(name, fn, cond ? 'skip' : 'run');
  d.runIf = (cond) => (name, fn) => addSuite(name, fn, cond ? 'run' : 'skip');
  d.each = (table) => (name, fn) => {
    table.forEach((row, i) => {
      const args = rowArgs(row);
      addSuite(formatName(name, args, i), () => (fn as (...a: unknown[]) => unknown)(...args), 'run');
    });
  };
  return d;
}

/** Registers a test (runs in {@link runRegistered}). */
export const it = makeTest();
/** Same as {@link it}. */
export const test = it;
/** Registers a group of tests. */
export const describe = makeDescribe();
/** Same as {@link describe}. */
export const suite = describe;
/** Runs once before the tests of the enclosing describe (or file). */
export const beforeAll = (fn: Body): void => void current.beforeAll.push(fn);
/** Runs once after the tests of the enclosing describe (or file). */
export const afterAll = (fn: Body): void => void current.afterAll.push(fn);
/** Runs before every test of the enclosing describe (or file). */
export const beforeEach = (fn: Body): void => void current.beforeEach.push(fn);
/** Runs after every test of the enclosing describe (or file). */
export const afterEach = (fn: Body): void => void current.afterEach.push(fn);

/** The outcome of one test. */
export interface TestResult {
  /** Names of the enclosing describes and the test, joined with ' > '. */
  name: string;
  status: 'pass' | 'fail' | 'skip' | 'todo';
  /** The error message and stack of a failure. */
  error?: string;
  /** Why the runner skipped it (see `skip` of {@link runRegistered}). */
  skipReason?: string;
  ms: number;
}

function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}${e.stack ? `\n${e.stack.split('\n').slice(1, 6).join('\n')}` : ''}`;
  return String(e);
}

function hasOnly(s: Suite): boolean {
  return s.children.some((c) => ('children' in c ? c.mode === 'only' || hasOnly(c) : c.mode === 'only'));
}

/**
 * Runs every registered test in declaration order (once), with hooks, and returns the results.
 * `onResult` is called after each test (for progress). `skip` maps full test names ('describe >
 * it') to a reason: those tests are reported as skipped with it. A failing beforeAll fails the
 * tests of its describe; a failing afterAll is reported as a failed pseudo-test "<suite> > afterAll".
 */
export async function runRegistered(onResult?: (r: TestResult) => void, skip: Record<string, string> = {}): Promise<TestResult[]> {
  collecting = false;
  const results: TestResult[] = [];
  const onlyMode = hasOnly(root);
  const emit = (r: TestResult) => {
    results.push(r);
    onResult?.(r);
  };
  const chainEach = (s: Suite | null, key: 'beforeEach' | 'afterEach'): Body[] => {
    const chain: Suite[] = [];
    for (let x = s; x; x = x.parent) chain.unshift(x);
    const hooks = chain.flatMap((x) => x[key]);
    return key === 'afterEach' ? hooks.reverse() : hooks;
  };
  async function runSuite(s: Suite, path: string[], skipped: boolean, selected: boolean): Promise<void> {
    const full = s.name ? [...path, s.name] : path;
    const skipAll = skipped || s.mode === 'skip';
    const sel = selected || s.mode === 'only';
    let setupError: unknown = null;
    if (!skipAll) {
      try {
        for (const h of s.beforeAll) await h();
      } catch (e) {
        setupError = e;
      }
    }
    for (const c of s.children) {
      if ('children' in c) {
        await runSuite(c, full, skipAll, sel);
        continue;
      }
      const name = [...full, c.name].join(' > ');
      if (c.mode === 'todo') {
        emit({ name, status: 'todo', ms: 0 });
        continue;
      }
      if (skipAll || c.mode === 'skip' || (onlyMode && !sel && c.mode !== 'only')) {
        emit({ name, status: 'skip', ms: 0 });
        continue;
      }
      if (Object.hasOwn(skip, name)) {
        emit({ name, status: 'skip', skipReason: skip[name], ms: 0 });
        continue;
      }
      const t0 = performance.now();
      if (setupError) {
        emit({ name, status: 'fail', error: `beforeAll failed: ${describeError(setupError)}`, ms: 0 });
        continue;
      }
      let error: unknown = null;
      try {
        for (const h of chainEach(s, 'beforeEach')) await h();
        await c.fn!();
      } catch (e) {
        error = e;
      }
      try {
        for (const h of chainEach(s, 'afterEach')) await h();
      } catch (e) {
        error ??= e;
      }
      const ms = performance.now() - t0;
      emit(error === null ? { name, status: 'pass', ms } : { name, status: 'fail', error: describeError(error), ms });
    }
    if (!skipAll) {
      try {
        for (const h of s.afterAll) await h();
      } catch (e) {
        emit({ name: [...full, 'afterAll'].join(' > '), status: 'fail', error: describeError(e), ms: 0 });
      }
    }
  }
  await runSuite(root, [], false, false);
  return results;
}
