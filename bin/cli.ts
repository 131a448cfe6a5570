/**
 * The `webdino` command line: `webdino <command> [options]`.
 *
 * bin/webdino.js imports the bundle of this file (dist/cli.js, built by scripts/build.mjs), and
 * importing it runs it: the last line is `await main(process.argv.slice(2))`.
 *
 * Commands live in one table (`COMMANDS`): name, one-line summary, options (node:util parseArgs
 * specs plus help text) and `run`. Adding a command is adding one entry; parsing, help and error
 * handling are shared.
 *
 * Exit codes
 * - 0: success (also `--help`);
 * - 1: the command failed: an error from the engine (NoAdapterError, DeviceError...) prints its
 *      message, with the stack only under `--verbose`; or a benchmark row failed;
 * - 2: usage error (unknown command or option, bad option value): a message and the usage.
 */
import { parseArgs } from 'node:util';
import { init } from '../index.js';
import { type BenchOptions, runBench } from '../bench/run.js';
import { BENCH_KERNELS, type BenchKernel } from '../bench/suite.js';
import { MAX_REPS } from '../engine/timing.js';

/** Where the CLI writes: one line per call. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** One option: a node:util parseArgs spec plus what `--help` shows. */
interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Placeholder of the value in the help, e.g. '<n>' (string options). */
  value?: string;
  description: string;
}

type Values = Record<string, string | boolean | undefined>;

/** A sub-command of `webdino`. */
interface Command {
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

/** Options every command accepts. */
const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h', description: 'Show this help' },
  verbose: { type: 'boolean', description: 'Print stack traces of errors' },
};

// -------------------------------------------------------------------------------------------------
// Commands

/** Parses an integer option value in [min, max]. */
function intOption(name: string, v: string | boolean | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v.trim()) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got '${v}'`);
  }
  return n;
}

/** Parses a comma-separated list whose items must come from `allowed`. */
function listOf<T extends string>(name: string, v: string, allowed: readonly T[]): T[] {
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

function benchOptions(values: Values): BenchOptions {
  let variants: BenchOptions['variants'] = 'auto';
  if (typeof values.variants === 'string' && values.variants !== 'auto') {
    variants = listOf('variants', values.variants, ['cpu', 'gpu'] as const);
  }
  return {
    only: typeof values.only === 'string' ? listOf<BenchKernel>('only', values.only, BENCH_KERNELS) : undefined,
    reps: intOption('reps', values.reps, 1, MAX_REPS),
    warmup: intOption('warmup', values.warmup, 0, 1000),
    variants,
    quick: values.quick === true,
    json: values.json === true,
  };
}

const bench: Command = {
  name: 'bench',
  summary: 'Time the kernels (matmul, attention, softmax, layernorm, AdamW, EMA) on this adapter',
  description:
    'Times each kernel on the WebGPU adapter and prints ms per run (median of GPU timestamps when the\n' +
    'adapter has timestamp-query, and wall clock) with GFLOP/s or GB/s. The matmul 1024³ row comes first.\n' +
    'Kernels that are not implemented yet are reported as skipped.',
  options: {
    only: { type: 'string', value: '<kernels>', description: `Comma-separated kernels to run: ${BENCH_KERNELS.join(', ')} (default: all)` },
    reps: { type: 'string', value: '<n>', description: 'Timed runs per row (default: automatic, 3 to 50 runs filling about 1 s; fewer for very slow rows)' },
    warmup: { type: 'string', value: '<n>', description: 'Untimed runs before the timed ones (default: 1)' },
    variants: { type: 'string', value: '<v>', description: "Kernel variants: auto (the adapter's pick), cpu, gpu, or cpu,gpu (default: auto)" },
    quick: { type: 'boolean', description: 'Small shapes (a few seconds in total), for tests and smoke runs' },
    json: { type: 'boolean', description: 'One JSON object per line on stdout (adapter description on stderr)' },
  },
  async run(values, io) {
    const opts = benchOptions(values);
    const wd = await init();
    try {
      const rows = await runBench(wd, opts, io.out, opts.json ? io.err : io.out);
      const failed = rows.filter((r) => r.status === 'failed').length;
      if (failed) io.err(`webdino bench: ${failed} row${failed > 1 ? 's' : ''} failed`);
      return failed ? 1 : 0;
    } finally {
      wd.destroy();
    }
  },
};

/** Every command, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [bench];

// -------------------------------------------------------------------------------------------------
// Help

function optionLines(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.value ? ` ${o.value}` : ''}`;
    return [flag, o.description] as const;
  });
  const w = Math.max(...rows.map(([f]) => f.length)) + 2;
  return rows.map(([f, d]) => `  ${f.padEnd(w)}${d}`);
}

/** `webdino --help`. */
export function usage(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'Usage: webdino <command> [options]',
    '',
    'webdino: WebGPU kernels, autograd and DINO self-supervised vision models.',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}${c.summary}`),
    '',
    'Options:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    "Run 'webdino <command> --help' for a command's options.",
  ].join('\n');
}

/** `webdino <command> --help`. */
export function commandUsage(cmd: Command): string {
  return [
    `Usage: webdino ${cmd.name} [options]`,
    '',
    cmd.description,
    '',
    'Options:',
    ...optionLines({ ...cmd.options, ...GLOBAL_OPTIONS }),
  ].join('\n');
}

// -------------------------------------------------------------------------------------------------
// Main

const stdio: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** parseArgs' message without its advice about '--' (first sentence only). */
function parseErrorMessage(e: Error): string {
  return e.message.split(/\.\s/)[0].replace(/\.$/, '');
}

/**
 * Runs the command line `argv` (without `node` and the script) and returns the exit code:
 * 0 success, 1 failure, 2 usage error.
 */
export async function main(argv: readonly string[], io: Io = stdio): Promise<number> {
  // Global options may come before the command: `webdino --verbose bench`.
  let i = 0;
  let verbose = false;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') {
      io.out(usage());
      return 0;
    }
    if (a === '--verbose') {
      verbose = true;
      continue;
    }
    io.err(`webdino: unknown option '${a}' (options other than --help and --verbose go after the command)`);
    io.err('');
    io.err(usage());
    return 2;
  }
  if (i === argv.length) {
    io.err('webdino: no command given');
    io.err('');
    io.err(usage());
    return 2;
  }
  const name = argv[i];
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    io.err(`webdino: unknown command '${name}'`);
    io.err('');
    io.err(usage());
    return 2;
  }

  let values: Values;
  try {
    ({ values } = parseArgs({ args: [...argv.slice(i + 1)], options: { ...cmd.options, ...GLOBAL_OPTIONS }, strict: true, allowPositionals: false }));
  } catch (e) {
    io.err(`webdino ${cmd.name}: ${parseErrorMessage(e as Error)}`);
    io.err('');
    io.err(commandUsage(cmd));
    return 2;
  }
  if (values.help) {
    io.out(commandUsage(cmd));
    return 0;
  }
  verbose ||= values.verbose === true;

  try {
    return await cmd.run(values, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`webdino ${cmd.name}: ${e.message}`);
      io.err('');
      io.err(commandUsage(cmd));
      return 2;
    }
    const err = e instanceof Error ? e : new Error(String(e));
    const message = err.message.startsWith('webdino') ? err.message : `webdino ${cmd.name}: ${err.message}`;
    io.err(verbose && err.stack ? err.stack : message);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
