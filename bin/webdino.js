#!/usr/bin/env node
// The `webdino` command. The CLI is bin/cli.ts; its process entry bin/entry.ts is bundled to
// dist/cli.js by scripts/build.mjs (`npm run build`).
//
// Dawn (the GPU driver layer of the `webgpu` package) prints two "Warning: maxDynamic...Buffers...
// artificially reduced" lines from native code straight to file descriptor 2 when it opens an
// adapter, on every command; Node cannot redirect a native write. So this launcher runs dist/cli.js
// as a child whose fd 2 is a pipe that it filters (those two lines go, everything else is passed
// on), and gives the child the real stderr as fd 3 for its own messages and progress bars
// (WEBDINO_STDERR_FD=3), so terminal output is unchanged. With --verbose, on Windows, or with
// WEBDINO_RAW_STDERR=1, dist/cli.js runs in this process and prints everything.
//
// Signals: the child is in a process group of its own, so a terminal's Ctrl-C reaches it once,
// through this process, which forwards SIGINT, SIGTERM and SIGHUP (and stops and continues with it
// on SIGTSTP / SIGCONT). If this process dies, the child's IPC channel closes, which the child
// takes as SIGHUP: it saves its work and stops. The exit code is the child's; a child killed by a
// signal makes this process exit with 128 + n.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('webdino: not built yet — run `npm run build` (or `npm run setup`)');
  process.exit(1);
}

/** A native line from Dawn that says nothing actionable (see the header). */
const DAWN_NOISE = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.\r?$/;

const args = process.argv.slice(2);
if (args.includes('--verbose') || process.platform === 'win32' || process.env.WEBDINO_RAW_STDERR === '1') {
  await import(cli.href);
} else {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(cli), ...args], {
    stdio: ['ignore', 'inherit', 'pipe', 2, 'ipc'],
    env: { ...process.env, WEBDINO_STDERR_FD: '3' },
    detached: true,
  });

  // Whole lines, minus Dawn's noise; a last line without a newline is passed on at the end.
  let pending = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    const lines = (pending + text).split('\n');
    pending = lines.pop();
    const kept = lines.filter((l) => !DAWN_NOISE.test(l));
    if (kept.length) process.stderr.write(kept.join('\n') + '\n');
  });
  child.stderr.on('end', () => {
    if (pending && !DAWN_NOISE.test(pending)) process.stderr.write(pending);
  });

  const forward = (signal) => () => {
    try {
      child.kill(signal);
    } catch {
      // The child has exited already.
    }
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGCONT']) process.on(s, forward(s));
  process.on('SIGTSTP', () => {
    forward('SIGTSTP')();
    process.kill(process.pid, 'SIGSTOP');
  });

  child.on('error', (e) => {
    console.error(`webdino: could not start ${fileURLToPath(cli)}: ${e.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    const exit = () => process.exit(code ?? 128 + (constants.signals[signal] ?? 0));
    // Let the last filtered lines out first.
    if (child.stderr.readableEnded) exit();
    else child.stderr.once('end', exit).once('error', exit);
  });
}
