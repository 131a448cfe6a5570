/**
 * Command-line options, each declared once: its type, range, default, whether it is required and
 * its help. Parsing, validation and the `--help` text are all derived from the declaration, so a
 * default printed by `--help` is the default the command gets.
 *
 *   const options = {
 *     'batch-size': int({ min: 1, max: 4096, default: 16, help: 'Images per forward pass' }),
 *     weights: path({ role: 'input', required: true, help: 'Backbone weights' }),
 *   };
 *   parseOptions(options, ['--batch-size', '8'], cwd)  // { 'batch-size': 8, weights: ... } typed
 *
 * Defaults come in two kinds:
 * - `default`: a fixed value; the parsed value is never undefined and `--help` prints it;
 * - `derived`: the default depends on the run (the weights' recorded image size, the trainer's
 *   recipe): `--help` prints the text, the parsed value is undefined when the option is absent, and
 *   the command resolves it (with `orDerived` when there is also a fixed fallback `default`).
 *
 * Syntax: `--name value`, `--name=value`, flags as `--name`. A value may start with '-' when it is a
 * number (`--epochs -1` is the value -1, then range-checked), otherwise an option that needs a
 * value and is followed by another option is an error. Positional arguments are refused. The last
 * occurrence of a repeated option wins.
 */
import { isAbsolute, resolve } from 'node:path';

/** A mistake in the command line: reported with the usage, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

interface Common {
  /** One line for `--help`. */
  help: string;
  /** Placeholder of the value in the help, e.g. '<n>'. */
  value?: string;
  /** The command cannot run without it. */
  required?: boolean;
  /** What the default depends on, for options whose default is decided by the run. */
  derived?: string;
}

export interface IntOption extends Common {
  type: 'int';
  min: number;
  max: number;
  default?: number;
}
export interface NumberOption extends Common {
  type: 'number';
  min: number;
  max: number;
  default?: number;
}
export interface StringOption extends Common {
  type: 'string';
  default?: string;
}
/**
 * A file or folder, resolved against the working directory. Inputs are protected from being
 * overwritten by the command's outputs (see bin/outputs.ts).
 */
export interface PathOption extends Common {
  type: 'path';
  role: 'input' | 'output';
  default?: string;
}
/**
 * A comma-separated list of files, each resolved against the working directory (a path that
 * holds a comma cannot be given here). Inputs are protected like a single path's.
 */
export interface PathListOption extends Common {
  type: 'paths';
  role: 'input' | 'output';
  /** No fixed default: a list of files is the run's own. */
  default?: never;
}
export interface ChoiceOption<C extends string = string> extends Common {
  type: 'choice';
  choices: readonly C[];
  default?: C;
}
/** A comma-separated list of choices (duplicates dropped, order kept). */
export interface ListOption<C extends string = string> extends Common {
  type: 'list';
  choices: readonly C[];
  default?: readonly C[];
}
/** A comma-separated list of integers in [min, max]. */
export interface IntListOption extends Common {
  type: 'ints';
  min: number;
  max: number;
  /** Keep repeated values and their order (a per-level list); default: duplicates dropped. */
  repeats?: boolean;
  default?: readonly number[];
}
/** One part of a job split in n: 'i/n' with 0 ≤ i < n ≤ max. */
export interface PartOption extends Common {
  type: 'part';
  max: number;
  default?: never;
}
export interface FlagOption {
  type: 'flag';
  help: string;
  short?: string;
}

export type OptionSpec = IntOption | NumberOption | StringOption | PathOption | PathListOption | ChoiceOption | ListOption | IntListOption | PartOption | FlagOption;
export type OptionSpecs = Record<string, OptionSpec>;

// Builders: they only add the `type` tag, and keep literal types (choices, `required: true`).
export const int = <const S extends Omit<IntOption, 'type'>>(s: S) => ({ ...s, type: 'int' as const });
export const num = <const S extends Omit<NumberOption, 'type'>>(s: S) => ({ ...s, type: 'number' as const });
export const str = <const S extends Omit<StringOption, 'type'>>(s: S) => ({ ...s, type: 'string' as const });
export const path = <const S extends Omit<PathOption, 'type'>>(s: S) => ({ ...s, type: 'path' as const });
export const pathList = <const S extends Omit<PathListOption, 'type'>>(s: S) => ({ ...s, type: 'paths' as const });
export const choice = <const S extends Omit<ChoiceOption, 'type'>>(s: S) => ({ ...s, type: 'choice' as const });
export const list = <const S extends Omit<ListOption, 'type'>>(s: S) => ({ ...s, type: 'list' as const });
export const ints = <const S extends Omit<IntListOption, 'type'>>(s: S) => ({ ...s, type: 'ints' as const });
export const part = <const S extends Omit<PartOption, 'type'>>(s: S) => ({ ...s, type: 'part' as const });
export const flag = <const S extends Omit<FlagOption, 'type'>>(s: S) => ({ ...s, type: 'flag' as const });

/** The TypeScript type of one option's value. */
type ValueOf<S> = S extends { type: 'flag' }
  ? boolean
  : S extends { type: 'int' | 'number' }
    ? number
    : S extends { type: 'choice'; choices: readonly (infer C)[] }
      ? C
      : S extends { type: 'list'; choices: readonly (infer C)[] }
        ? C[]
        : S extends { type: 'ints' }
          ? number[]
          : S extends { type: 'paths' }
            ? string[]
            : S extends { type: 'part' }
              ? { i: number; n: number }
              : string;
/** Whether the parsed value is always present: flags, required options, fixed defaults. */
type Always<S> = S extends { type: 'flag' } ? true : S extends { required: true } ? true : S extends { derived: string } ? false : S extends { default: unknown } ? true : false;

/** The parsed values of a set of options, typed from their declarations. */
export type Values<O extends OptionSpecs> = { -readonly [K in keyof O]: Always<O[K]> extends true ? ValueOf<O[K]> : ValueOf<O[K]> | undefined };

// -------------------------------------------------------------------------------------------------
// Parsing

/** A value token for an option that needs one: anything but another option; negative numbers are values. */
function isValueToken(t: string | undefined): t is string {
  return t !== undefined && (!t.startsWith('-') || /^-(\d|\.\d|Infinity)/.test(t));
}

/** Splits `args` into option name → raw value (true for flags); UsageError for a malformed line. */
export function tokenize(specs: OptionSpecs, args: readonly string[]): Map<string, string | true> {
  const raw = new Map<string, string | true>();
  const shorts = new Map<string, string>();
  for (const [n, s] of Object.entries(specs)) if (s.type === 'flag' && s.short) shorts.set(`-${s.short}`, n);
  for (let i = 0; i < args.length; i++) {
    const t = args[i];
    let name: string;
    let inline: string | undefined;
    if (t.startsWith('--') && t.length > 2) {
      const eq = t.indexOf('=');
      name = eq < 0 ? t.slice(2) : t.slice(2, eq);
      inline = eq < 0 ? undefined : t.slice(eq + 1);
    } else if (shorts.has(t)) {
      name = shorts.get(t)!;
    } else if (t.startsWith('-') && t !== '-') {
      throw new UsageError(`unknown option '${t}'`);
    } else {
      throw new UsageError(`unexpected argument '${t}' (every value belongs to an option: --name value)`);
    }
    const spec = specs[name];
    if (!spec) throw new UsageError(`unknown option '--${name}'`);
    if (spec.type === 'flag') {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      raw.set(name, true);
      continue;
    }
    if (inline !== undefined) {
      raw.set(name, inline);
    } else if (isValueToken(args[i + 1])) {
      raw.set(name, args[++i]);
    } else {
      throw new UsageError(`--${name} needs a value${spec.value ? ` ${spec.value}` : ''}`);
    }
  }
  return raw;
}

function range(min: number, max: number): string {
  return `from ${min} to ${max}`;
}

/** One option's value from its raw text; UsageError when out of range or malformed. */
function convert(name: string, spec: Exclude<OptionSpec, FlagOption>, text: string, cwd: string): unknown {
  switch (spec.type) {
    case 'int': {
      const n = Number(text);
      if (!/^\s*-?\d+\s*$/.test(text) || n < spec.min || n > spec.max) {
        throw new UsageError(`--${name} must be an integer ${range(spec.min, spec.max)}, got '${text}'`);
      }
      return n;
    }
    case 'number': {
      const n = Number(text);
      if (text.trim() === '' || !Number.isFinite(n) || n < spec.min || n > spec.max) {
        throw new UsageError(`--${name} must be a number ${range(spec.min, spec.max)}, got '${text}'`);
      }
      return n;
    }
    case 'string':
      if (text === '') throw new UsageError(`--${name} must not be empty`);
      return text;
    case 'path':
      if (text === '') throw new UsageError(`--${name} must not be empty`);
      return isAbsolute(text) ? text : resolve(cwd, text);
    case 'paths': {
      const items = text.split(',').map((s) => s.trim());
      if (items.some((s) => s === '')) throw new UsageError(`--${name}: empty file name in '${text}'`);
      return items.map((s) => (isAbsolute(s) ? s : resolve(cwd, s)));
    }
    case 'choice':
      if (!(spec.choices as readonly string[]).includes(text)) throw new UsageError(`--${name} must be one of ${spec.choices.join(', ')}, got '${text}'`);
      return text;
    case 'list': {
      const items = text.split(',').map((s) => s.trim()).filter(Boolean);
      const bad = items.filter((s) => !(spec.choices as readonly string[]).includes(s));
      if (bad.length || !items.length) {
        throw new UsageError(`--${name}: unknown ${bad.length ? `value '${bad.join("', '")}'` : 'empty list'}; choose from ${spec.choices.join(', ')}`);
      }
      return [...new Set(items)];
    }
    case 'part': {
      const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
      const i = m ? Number(m[1]) : NaN;
      const n = m ? Number(m[2]) : NaN;
      if (!m || n < 1 || n > spec.max || i >= n) throw new UsageError(`--${name} must be i/n with 0 ≤ i < n ≤ ${spec.max} (job i of n), got '${text}'`);
      return { i, n };
    }
    case 'ints': {
      const values = text
        .split(',')
        .map((s) => s.trim())
        .map((s) => {
          const n = Number(s);
          if (!/^-?\d+$/.test(s) || n < spec.min || n > spec.max) throw new UsageError(`--${name}: '${s}' is not an integer ${range(spec.min, spec.max)}`);
          return n;
        });
      return spec.repeats ? values : [...new Set(values)];
    }
  }
}

/** The default of an option as a parsed value (paths resolved), or undefined. */
function defaultValue(spec: OptionSpec, cwd: string): unknown {
  if (spec.type === 'flag') return false;
  if (spec.derived !== undefined || spec.default === undefined) return undefined;
  if (spec.type === 'path') return resolve(cwd, spec.default);
  return Array.isArray(spec.default) ? [...spec.default] : spec.default;
}

/**
 * Parses and validates `args` against `specs`: every option gets its typed value, its default, or
 * undefined. Throws UsageError for an unknown option, a bad value or a missing required option.
 */
export function parseOptions<O extends OptionSpecs>(specs: O, args: readonly string[], cwd: string): Values<O> {
  const raw = tokenize(specs, args);
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const r = raw.get(name);
    if (r === undefined) {
      if (spec.type !== 'flag' && spec.required) throw new UsageError(`--${name} is required`);
      values[name] = defaultValue(spec, cwd);
    } else {
      values[name] = r === true ? true : convert(name, spec as Exclude<OptionSpec, FlagOption>, r, cwd);
    }
  }
  return values as Values<O>;
}

/**
 * The value of an option whose default is derived: the given value, else what the run derived,
 * else the declared fallback `default`.
 */
export function orDerived<T>(given: T | undefined, derived: T | undefined, spec: { default?: T }): T {
  const v = given ?? derived ?? spec.default;
  if (v === undefined) throw new Error('orDerived: the option declares no fallback default');
  return v;
}

// -------------------------------------------------------------------------------------------------
// Help

function formatDefault(d: unknown): string {
  return Array.isArray(d) ? d.join(',') : String(d);
}

/** The help line's text of one option: its help, then "(required)" or "(default: …)". */
export function describeOption(spec: OptionSpec): string {
  if (spec.type === 'flag') return spec.help;
  if (spec.required) return `${spec.help} (required)`;
  if (spec.derived !== undefined) {
    return `${spec.help} (default: ${spec.derived}${spec.default !== undefined ? `, else ${formatDefault(spec.default)}` : ''})`;
  }
  if (spec.default !== undefined) return `${spec.help} (default: ${formatDefault(spec.default)})`;
  return spec.help;
}

/** The option table of a `--help`: flag and placeholder, then the description. */
export function optionLines(specs: OptionSpecs): string[] {
  const rows = Object.entries(specs).map(([name, s]) => {
    const short = s.type === 'flag' && s.short ? `-${s.short}, ` : '    ';
    const placeholder = s.type === 'flag' ? '' : ` ${s.value ?? '<value>'}`;
    return [`${short}--${name}${placeholder}`, describeOption(s)] as const;
  });
  const w = Math.max(...rows.map(([f]) => f.length)) + 2;
  return rows.map(([f, d]) => `  ${f.padEnd(w)}${d}`);
}
