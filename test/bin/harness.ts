/**
 * Runs `webdino` in-process: bin/cli.ts's `main` with a test `Io` that records what it prints and
 * lets the test raise stop requests, as the process entry would on SIGINT/SIGTERM/SIGHUP. Nothing
 * global is patched.
 */
import { main, type Io, type StopSignal } from '../../bin/cli.js';

/** A recording Io. `stop(signal)` calls the handlers the command subscribed with `onStop`. */
export function testIo(opts: { cwd?: string } = {}): { io: Io; out: string[]; err: string[]; stop(signal: StopSignal): void; listeners(): number } {
  const out: string[] = [];
  const err: string[] = [];
  const handlers = new Set<(s: StopSignal) => void>();
  const io: Io = {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    cwd: opts.cwd,
    onStop: (h) => {
      handlers.add(h);
      return () => handlers.delete(h);
    },
  };
  return { io, out, err, stop: (s) => handlers.forEach((h) => h(s)), listeners: () => handlers.size };
}

/** Runs `webdino args...` in-process; returns the exit code and what it printed. */
export async function webdino(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const t = testIo();
  const code = await main(args, t.io);
  return { code, out: t.out.join('\n'), err: t.err.join('\n') };
}
