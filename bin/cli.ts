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
import { type Command, type Io, type OptionSpec, type Values, UsageError } from './command.js';
import { bench } from './commands/bench.js';
import { train } from './commands/train.js';
import { evalKnn, evalLinear, evalSegment } from './commands/eval.js';
import { attention, embed } from './commands/attention.js';
import { visualize } from './commands/visualize.js';
import { report } from './commands/report.js';
export { UsageError } from './command.js';
export type { Io } from './command.js';

/** Options every command accepts. */
const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h', description: 'Show this help' },
  verbose: { type: 'boolean', description: 'Print stack traces of errors' },
};

/** Every command, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [train, evalKnn, evalLinear, evalSegment, embed, attention, visualize, report, bench];

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
  // Two-word commands (`eval knn`) are matched before one-word ones.
  const two = i + 1 < argv.length ? `${argv[i]} ${argv[i + 1]}` : '';
  const cmd2 = COMMANDS.find((c) => c.name === two);
  const name = cmd2 ? two : argv[i];
  const cmd = cmd2 ?? COMMANDS.find((c) => c.name === name);
  const rest = argv.slice(i + (cmd2 ? 2 : 1));
  if (!cmd) {
    io.err(`webdino: unknown command '${name}'`);
    io.err('');
    io.err(usage());
    return 2;
  }

  let values: Values;
  try {
    ({ values } = parseArgs({ args: [...rest], options: { ...cmd.options, ...GLOBAL_OPTIONS }, strict: true, allowPositionals: false }));
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
