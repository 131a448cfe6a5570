/**
 * What every `webdino` sub-command shares: the command shape, option specs, usage errors and the
 * option parsers. Each command lives in bin/commands/<name>.ts and is listed in bin/cli.ts.
 */

/** Where the CLI writes: one line per call. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** One option: a node:util parseArgs spec plus what `--help` shows. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Placeholder of the value in the help, e.g. '<n>' (string options). */
  value?: string;
  description: string;
}

export type Values = Record<string, string | boolean | undefined>;

/** A sub-command of `webdino`. */
export interface Command {
  name: string;
  /** One line, shown in `webdino --help`. */
  summary: string;
  /** A paragraph shown in `webdino <command> --help`. */
  description: string;
  options: Record<string, OptionSpec>;
  /** Runs the command; returns the exit code. Throw `UsageError` for a bad option value. */
  run(values: Values, io: Io): Promise<number>;
}

/** A mistake in the command line: reported with the usage, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Parses an integer option value in [min, max]. */
export function intOption(name: string, v: string | boolean | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v.trim()) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got '${v}'`);
  }
  return n;
}

/** Parses a comma-separated list whose items must come from `allowed`. */
export function listOf<T extends string>(name: string, v: string, allowed: readonly T[]): T[] {
  const items = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = items.filter((s) => !(allowed as readonly string[]).includes(s));
  if (bad.length || !items.length) {
    throw new UsageError(`--${name}: unknown ${bad.length ? `value '${bad.join("', '")}'` : 'empty list'}; choose from ${allowed.join(', ')}`);
  }
  return [...new Set(items)] as T[];
}


/** A string option's value, or undefined. */
export function strOption(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Parses a number option value (finite, in [min, max]). */
export function numOption(name: string, v: string | boolean | undefined, min = -Infinity, max = Infinity): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be a number from ${min} to ${max}, got '${v}'`);
  }
  return n;
}
