/**
 * The `webdino` command line: `main(argv, io)` runs `webdino <command> [options]` and returns the
 * exit code. Importing this module does nothing else: bin/entry.ts (bundled to dist/cli.js) is the
 * process entry that calls it with the real stdout, stderr, signals and working directory, and
 * tests call it with their own `Io`.
 *
 * Commands live in one table (`COMMANDS`): name, one-line summary, options (declared once in
 * bin/options.ts: type, range, default, help) and `run`. Adding a command is adding one entry;
 * parsing, help, input protection, clean-up and error handling are shared. A two-word name
 * ('eval knn') makes a group: `webdino eval` lists its members.
 *
 * Exit codes
 * - 0: success (also `--help`);
 * - 1: the command failed: its error message is printed (the stack only under `--verbose`);
 * - 2: usage error (unknown command or option, bad option value): a message and the usage;
 * - 128 + n: stopped by signal n (`webdino train`: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), after
 *   saving what it had.
 */
import { type AnyCommand, type Context, type Io, UsageError } from './command.js';
import { flag, optionLines, type OptionSpecs, parseOptions, type PathListOption, type PathOption } from './options.js';
import { Outputs } from './outputs.js';
import { Resources } from './resources.js';
import { bench } from './commands/bench.js';
import { train } from './commands/train.js';
import { evalKnn, evalLinear, evalSegment } from './commands/eval.js';
import { attention } from './commands/attention.js';
import { embed } from './commands/embed.js';
import { visualize } from './commands/visualize.js';
import { report } from './commands/report.js';
import { curateCommand } from './commands/curate.js';

export { UsageError } from './command.js';
export type { Io, StopSignal } from './command.js';

/** Options every command accepts. */
const GLOBAL_OPTIONS = {
  help: flag({ short: 'h', help: 'Show this help' }),
  verbose: flag({ help: "Print stack traces of errors (and the GPU driver's start-up messages)" }),
} satisfies OptionSpecs;

/** Every command, in the order `--help` lists them. */
export const COMMANDS: readonly AnyCommand[] = [train, evalKnn, evalLinear, evalSegment, embed, curateCommand, attention, visualize, report, bench];

// -------------------------------------------------------------------------------------------------
// Help

function commandTable(commands: readonly AnyCommand[]): string[] {
  const w = Math.max(...commands.map((c) => c.name.length)) + 2;
  return commands.map((c) => `  ${c.name.padEnd(w)}${c.summary}`);
}

/** `webdino --help`. */
export function usage(): string {
  return [
    'Usage: webdino <command> [options]',
    '',
    'webdino: WebGPU kernels, autograd and DINO self-supervised vision models.',
    '',
    'Commands:',
    ...commandTable(COMMANDS),
    '',
    'Options:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    "Run 'webdino <command> --help' for a command's options.",
  ].join('\n');
}

/** `webdino <command> --help`. */
export function commandUsage(cmd: AnyCommand): string {
  return [`Usage: webdino ${cmd.name} [options]`, '', cmd.description, '', 'Options:', ...optionLines({ ...cmd.options, ...GLOBAL_OPTIONS })].join('\n');
}

/** The members of a group (`eval` → eval knn, eval linear, eval segment). */
function groupMembers(group: string): AnyCommand[] {
  return COMMANDS.filter((c) => c.name.startsWith(`${group} `));
}

/** `webdino eval --help`. */
export function groupUsage(group: string): string {
  return [`Usage: webdino ${group} <${groupMembers(group).map((c) => c.name.slice(group.length + 1)).join('|')}> [options]`, '', 'Commands:', ...commandTable(groupMembers(group)), '', `Run 'webdino ${group} <command> --help' for a command's options.`].join('\n');
}

// -------------------------------------------------------------------------------------------------
// Main

/** The message of a failure: the error's own, prefixed with the command unless it names webdino. */
function failureMessage(cmd: AnyCommand, err: Error, verbose: boolean): string {
  if (verbose && err.stack) return err.stack;
  return err.message.startsWith('webdino') ? err.message : `webdino ${cmd.name}: ${err.message}`;
}

/** The files an option of type path or paths names (none when it is absent). */
function filesOf(value: unknown): string[] {
  return typeof value === 'string' ? [value] : Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/** Registers the input files of `values` with `outputs`, and refuses an output option that names one. */
function protectInputs(cmd: AnyCommand, values: Record<string, unknown>, outputs: Outputs): void {
  const paths = Object.entries(cmd.options as OptionSpecs).filter((e): e is [string, PathOption | PathListOption] => e[1].type === 'path' || e[1].type === 'paths');
  for (const [name, spec] of paths) {
    if (spec.role === 'input') for (const f of filesOf(values[name])) outputs.protect(f, `--${name} ${f}`);
  }
  for (const [name, spec] of paths) {
    if (spec.role !== 'output') continue;
    for (const f of filesOf(values[name])) {
      const input = outputs.inputAt(f);
      if (input !== undefined) throw new UsageError(`--${name} ${f} is the same file as ${input}: an output never overwrites an input`);
    }
  }
}

/**
 * Runs the command line `argv` (without `node` and the script) and returns the exit code: 0
 * success, 1 failure, 2 usage error, 128 + n stopped by signal n.
 */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const fullIo = { ...io, now: io.now ?? (() => performance.now()) };
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
  // Two-word commands (`eval knn`) are matched before one-word ones.
  const word = argv[i];
  const next = argv[i + 1];
  const two = COMMANDS.find((c) => c.name === `${word} ${next}`);
  const cmd = two ?? COMMANDS.find((c) => c.name === word);
  if (!cmd) {
    if (groupMembers(word).length) {
      if (next === '-h' || next === '--help') {
        io.out(groupUsage(word));
        return 0;
      }
      const members = groupMembers(word).map((c) => c.name.slice(word.length + 1));
      io.err(next !== undefined && !next.startsWith('-') ? `webdino: unknown command '${word} ${next}' (${word} commands: ${members.join(', ')})` : `webdino: '${word}' needs a command: ${members.join(', ')}`);
    } else {
      io.err(`webdino: unknown command '${word}'`);
    }
    io.err('');
    io.err(groupMembers(word).length ? groupUsage(word) : usage());
    return 2;
  }
  const rest = argv.slice(i + (two ? 2 : 1));
  const ctx: Context = { io: fullIo, cwd: io.cwd ?? process.cwd(), verbose, resources: new Resources(), outputs: new Outputs() };

  // Help comes before validation: `webdino embed --help` must not ask for the required --weights.
  // (No option takes a value that starts with '-', so these tokens are always the flag.)
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(commandUsage(cmd));
    return 0;
  }
  let values: Record<string, unknown>;
  try {
    values = parseOptions({ ...(cmd.options as OptionSpecs), ...GLOBAL_OPTIONS }, rest, ctx.cwd);
    protectInputs(cmd, values, ctx.outputs);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.err(`webdino ${cmd.name}: ${e.message}`);
    io.err('');
    io.err(commandUsage(cmd));
    return 2;
  }
  const run = { ...ctx, verbose: verbose || values.verbose === true };

  try {
    return await cmd.run(values, run);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`webdino ${cmd.name}: ${e.message}`);
      io.err('');
      io.err(commandUsage(cmd));
      return 2;
    }
    io.err(failureMessage(cmd, e instanceof Error ? e : new Error(String(e)), run.verbose));
    return 1;
  } finally {
    for (const e of await ctx.resources.close()) io.err(`webdino ${cmd.name}: warning: while closing: ${(e as Error).message ?? e}`);
  }
}
