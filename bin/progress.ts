/**
 * Progress of long jobs on the terminal: a live bar (cli-progress) on a TTY with loss, lr, teacher
 * momentum and images/s; plain lines every 10 seconds otherwise (logs, CI).
 */
import cliProgress from 'cli-progress';
import type { Io } from './command.js';

export interface StepInfo {
  iteration: number;
  total: number;
  epoch: number;
  loss: number;
  lr: number;
  momentum: number;
  imagesPerSecond: number;
}

export class ProgressReporter {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = 0;
  private readonly tty = Boolean(process.stderr.isTTY);
  private readonly started = performance.now();

  constructor(private readonly io: Io) {}

  step(s: StepInfo): void {
    const payload = {
      loss: s.loss.toFixed(4),
      lr: s.lr.toExponential(2),
      mom: s.momentum.toFixed(4),
      ips: s.imagesPerSecond.toFixed(1),
      epoch: s.epoch,
    };
    if (this.tty) {
      if (!this.bar) {
        this.bar = new cliProgress.SingleBar(
          { format: 'train [{bar}] {value}/{total} | epoch {epoch} | loss {loss} | lr {lr} | m {mom} | {ips} img/s | eta {eta_formatted}', hideCursor: true, etaBuffer: 50 },
          cliProgress.Presets.shades_classic,
        );
        this.bar.start(s.total, s.iteration + 1, payload);
      }
      this.bar.update(s.iteration + 1, payload);
      return;
    }
    const now = performance.now();
    if (now - this.lastLine > 10_000 || s.iteration + 1 === s.total || s.iteration === 0) {
      this.lastLine = now;
      const elapsed = (now - this.started) / 1000;
      this.io.out(
        `iter ${s.iteration + 1}/${s.total} epoch ${s.epoch} loss ${payload.loss} lr ${payload.lr} momentum ${payload.mom} ${payload.ips} img/s (${elapsed.toFixed(0)} s)`,
      );
    }
  }

  /** A message that must not be overwritten by the bar. */
  log(line: string): void {
    if (this.bar) this.bar.stop();
    this.bar = null;
    this.io.out(line);
  }

  done(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
