/**
 * Progress of long jobs: a live bar (cli-progress) when the process gives a terminal to draw on
 * (`Io.progress`), plain lines on `Io.out` otherwise (logs, CI, tests) at the start, every 10
 * seconds and at the end.
 *
 * - `ProgressReporter`: training steps, with loss, lr, teacher momentum and images/s;
 * - `BatchProgress`: a batch loop over images (embed, eval).
 */
import cliProgress from 'cli-progress';
import type { Io } from './command.js';

/** Seconds between two plain progress lines. */
const LINE_INTERVAL_MS = 10_000;

type ProgressIo = Pick<Io, 'out' | 'progress'> & { now(): number };

/** A bar on the terminal of `io`, or null when there is none. */
function terminalBar(io: ProgressIo, format: string, etaBuffer: number): cliProgress.SingleBar | null {
  if (!io.progress?.isTTY) return null;
  return new cliProgress.SingleBar(
    { format, hideCursor: true, etaBuffer, stream: io.progress as unknown as NodeJS.WritableStream },
    cliProgress.Presets.shades_classic,
  );
}

export interface StepInfo {
  iteration: number;
  total: number;
  epoch: number;
  loss: number;
  lr: number;
  momentum: number;
  imagesPerSecond: number;
  /** Mixed precision: the loss scale of the step, and whether its gradients overflowed (step skipped). */
  lossScale?: number;
  skipped?: boolean;
}

/** Training progress. */
export class ProgressReporter {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = -Infinity;
  private readonly started: number;

  constructor(private readonly io: ProgressIo) {
    this.started = io.now();
  }

  step(s: StepInfo): void {
    if (s.skipped) {
      this.log(`iter ${s.iteration + 1}/${s.total}: the gradients overflowed at loss scale ${s.lossScale}: step skipped (nothing updated), the scale is halved`);
    }
    const payload = {
      loss: s.loss.toFixed(4),
      lr: s.lr.toExponential(2),
      mom: s.momentum.toFixed(4),
      ips: s.imagesPerSecond.toFixed(1),
      epoch: s.epoch,
    };
    if (!this.bar) {
      this.bar = terminalBar(this.io, 'train [{bar}] {value}/{total} | epoch {epoch} | loss {loss} | lr {lr} | m {mom} | {ips} img/s | eta {eta_formatted}', 50);
      this.bar?.start(s.total, s.iteration + 1, payload);
    }
    if (this.bar) {
      this.bar.update(s.iteration + 1, payload);
      return;
    }
    const now = this.io.now();
    if (now - this.lastLine > LINE_INTERVAL_MS || s.iteration + 1 === s.total || s.iteration === 0) {
      this.lastLine = now;
      const elapsed = (now - this.started) / 1000;
      this.io.out(
        `iter ${s.iteration + 1}/${s.total} epoch ${s.epoch} loss ${payload.loss} lr ${payload.lr} momentum ${payload.mom} ${payload.ips} img/s (${elapsed.toFixed(0)} s)`,
      );
    }
  }

  /** A message that must not be overwritten by the bar. */
  log(line: string): void {
    this.done();
    this.io.out(line);
  }

  /** Removes the bar (before other output). */
  done(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** Progress of a batch loop over images. */
export class BatchProgress {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = -Infinity;
  private readonly started: number;

  constructor(
    private readonly io: ProgressIo,
    private readonly label: string,
  ) {
    this.started = io.now();
  }

  /** `done` of `total` items finished. */
  update(done: number, total: number): void {
    const now = this.io.now();
    const elapsed = (now - this.started) / 1000;
    const ips = (done / Math.max(elapsed, 1e-9)).toFixed(1);
    if (!this.bar) {
      this.bar = terminalBar(this.io, `${this.label} [{bar}] {value}/{total} | {ips} img/s | eta {eta_formatted}`, 20);
      this.bar?.start(total, 0, { ips });
    }
    if (this.bar) {
      this.bar.update(done, { ips });
      return;
    }
    if (now - this.lastLine >= LINE_INTERVAL_MS || done === total) {
      this.lastLine = now;
      this.io.out(`${this.label} ${done}/${total} images, ${ips} img/s (${elapsed.toFixed(0)} s)`);
    }
  }

  /** Removes the bar (before other output). */
  done(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
