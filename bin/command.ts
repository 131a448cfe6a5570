/**
 * What every `webdino` command shares: the shape of a command, the process it talks to (`Io`) and
 * what one run of a command holds (`Context`). Each command lives in bin/commands/<name>.ts and is
 * listed in bin/cli.ts.
 *
 * `Io` is everything a command may take from the process, injected by the caller of `main`: where
 * lines go, the terminal that progress bars draw on, the working directory, stop requests
 * (signals) and the clock. Commands touch no process globals, so tests call `main` directly.
 */
import type { Outputs } from './outputs.js';
import type { OptionSpecs, Values } from './options.js';
import type { Resources } from './resources.js';

export { UsageError } from './options.js';

/** Why a command is asked to stop early: the signal, as its name. */
export type StopSignal = 'SIGINT' | 'SIGTERM' | 'SIGHUP';

/** Signal numbers on Linux and macOS: an interrupted command exits with 128 + n. */
export const SIGNAL_NUMBERS: Readonly<Record<StopSignal, number>> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** A terminal stream for progress bars (cli-progress draws with cursor moves on it). */
export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** The process as the CLI sees it. Only `out` and `err` are required. */
export interface Io {
  /** One line of results (stdout). */
  out(line: string): void;
  /** One line of diagnostics (stderr). */
  err(line: string): void;
  /** The terminal progress bars draw on; absent or null: progress is printed as plain lines. */
  progress?: ProgressStream | null;
  /** The directory relative paths are resolved against (default: the process's). */
  cwd?: string;
  /**
   * Subscribes to stop requests (SIGINT, SIGTERM, SIGHUP) and returns the unsubscribe function.
   * Absent: nothing asks commands to stop early.
   */
  onStop?(handler: (signal: StopSignal) => void): () => void;
  /** A monotonic clock in milliseconds (default: performance.now). */
  now?(): number;
}

/** One run of one command: the process, and what the run opened and must close. */
export interface Context {
  readonly io: Required<Pick<Io, 'out' | 'err' | 'now'>> & Io;
  readonly cwd: string;
  /** `--verbose` was given. */
  readonly verbose: boolean;
  /** Things to close when the command ends, whatever the outcome (datasets' worker threads...). */
  readonly resources: Resources;
  /** Every file the command writes goes through here: inputs are never overwritten. */
  readonly outputs: Outputs;
}

/** A sub-command of `webdino`, with its options declared once (bin/options.ts). */
export interface Command<O extends OptionSpecs = OptionSpecs> {
  /** 'train', or two words for a group member: 'eval knn'. */
  name: string;
  /** One line, shown in `webdino --help`. */
  summary: string;
  /** A paragraph shown in `webdino <command> --help`. */
  description: string;
  options: O;
  /** Runs the command; returns the exit code. Throw `UsageError` for a bad combination of options. */
  run(values: Values<O>, ctx: Context): Promise<number>;
}

/** A command of any options (the table in bin/cli.ts). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyCommand = Command<any>;

/** Declares a command; the options' declaration types its `run`'s values. */
export function defineCommand<const O extends OptionSpecs>(c: Command<O>): Command<O> {
  return c;
}
