/**
 * The process entry of `webdino` (bundled to dist/cli.js by scripts/build.mjs; bin/webdino.js
 * starts it): connects bin/cli.ts `main` to the real process and exits with its code.
 *
 * - out: stdout. err: stderr, or the descriptor named by WEBDINO_STDERR_FD when bin/webdino.js
 *   keeps fd 2 for the GPU driver's native messages (which it filters); progress bars draw on err
 *   when it is a terminal.
 * - Stop requests: while a command listens (`webdino train`), the first SIGINT, SIGTERM or SIGHUP
 *   asks it to stop (train saves a checkpoint and exits 128 + n); a second SIGINT quits at once
 *   (exit 130). With no listener a signal ends the process as it would without handlers. When the
 *   IPC channel of a parent bin/webdino.js closes (the parent died), that counts as SIGHUP.
 * - A closed stdout or stderr (a terminal hung up, `| head`) does not crash a command that is
 *   saving its work: write errors on them are dropped.
 */
import { createWriteStream, fstatSync } from 'node:fs';
import { Socket } from 'node:net';
import { isatty, WriteStream } from 'node:tty';
import { type Io, main, type StopSignal } from './cli.js';

/** The stream for diagnostics: fd 2, or the one bin/webdino.js passes. */
function errorStream(): NodeJS.WritableStream & { isTTY?: boolean; columns?: number } {
  const fd = Number(process.env.WEBDINO_STDERR_FD);
  if (!Number.isInteger(fd) || fd < 3) return process.stderr;
  if (isatty(fd)) return new WriteStream(fd);
  const st = fstatSync(fd);
  // Pipes and sockets through libuv (as Node does for fd 2); files with plain writes.
  if (st.isFIFO() || st.isSocket()) return new Socket({ fd, readable: false, writable: true });
  return createWriteStream('', { fd, autoClose: false });
}

/** Ignores write errors of a stream whose reader has gone (EPIPE, EIO after a hang-up). */
function tolerateClosed(stream: NodeJS.WritableStream): void {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE' && e.code !== 'EIO' && e.code !== 'ECONNRESET') throw e;
  });
}

const SIGNALS: readonly StopSignal[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** Fans process signals out to the command's stop handlers (see the file header). */
function stopRequests(): Io['onStop'] {
  const handlers = new Set<(s: StopSignal) => void>();
  let interrupted = false;
  const onSignal = (signal: StopSignal) => {
    if (signal === 'SIGINT') {
      if (interrupted) process.exit(130);
      interrupted = true;
    }
    for (const h of handlers) h(signal);
  };
  const listeners = new Map(SIGNALS.map((s) => [s, () => onSignal(s)] as const));
  const onDisconnect = () => onSignal('SIGHUP');
  return (handler) => {
    if (handlers.size === 0) {
      for (const [s, l] of listeners) process.on(s, l);
      process.on('disconnect', onDisconnect);
    }
    handlers.add(handler);
    return () => {
      handlers.delete(handler);
      if (handlers.size > 0) return;
      for (const [s, l] of listeners) process.off(s, l);
      process.off('disconnect', onDisconnect);
    };
  };
}

// The IPC channel of bin/webdino.js only reports the parent's death: it must not keep us alive.
(process as { channel?: { unref(): void } }).channel?.unref();

const err = errorStream();
tolerateClosed(process.stdout);
tolerateClosed(err);

const code = await main(process.argv.slice(2), {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => err.write(`${line}\n`),
  progress: err.isTTY ? (err as WriteStream) : null,
  cwd: process.cwd(),
  onStop: stopRequests(),
  now: () => performance.now(),
});
process.exitCode = code;
// A stream of our own on WEBDINO_STDERR_FD is a handle that would keep the process alive.
if (err !== process.stderr) err.end();
