/**
 * Writes the training report (train/report.ts) of a run folder: OUT/report.html from
 * OUT/metrics.jsonl, the run's configuration, and pictures of the teacher backbone on a few fixed
 * images of the training data (evenly spaced indices, so an ImageFolder sorted by class shows
 * several classes). Node only (reads and writes files). The page is written atomically: a failure
 * leaves the previous report, if any, in place.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { writeFileAtomic } from '../models/io/node-files.js';
import type { VisionTransformer } from '../models/vit.js';
import { type Dataset, type Sample, SampleReadError } from './data/dataset.js';
import { parseMetrics, renderReport, type ReportPictureRow } from './report.js';
import { computeVisuals } from '../eval/visualize.js';

/** Options of {@link writeTrainingReport}. */
export interface TrainingReportOptions {
  /** The run folder (holds metrics.jsonl; report.html is written there). */
  outDir: string;
  /** The backbone to draw (the teacher), in eval mode. */
  backbone: VisionTransformer;
  /**
   * Input side of the pictures. Callers pass twice the training crop, as the demo does and as
   * DINO's visualize_attention does (480 px for models trained at 224): at the training size a
   * patch-8 model on 32 px crops has only 4×4 attention cells.
   */
  size: number;
  /** Images to draw from (the training data). */
  dataset: Dataset;
  /** Number of pictured images (default 4). */
  count?: number;
  /** The run's configuration, shown as a table. */
  config?: Record<string, unknown>;
  /** Extra lines under the title (data source, ...). */
  subtitle?: string[];
}

/** The dataset indices pictured: `count` evenly spaced indices. */
export function reportImageIndices(length: number, count: number): number[] {
  const n = Math.min(count, length);
  return Array.from({ length: n }, (_, i) => Math.floor((i * length) / n));
}

/**
 * The samples at `wanted`, where an unreadable one (SampleReadError: training skipped it too) is
 * replaced by the next readable index after it, looking at most 16 further; pictures of fewer
 * images rather than no report at all.
 */
async function readableSamples(dataset: Dataset, wanted: readonly number[]): Promise<{ idx: number[]; samples: Sample[] }> {
  const idx: number[] = [];
  const samples: Sample[] = [];
  for (const start of wanted) {
    for (let i = start; i < Math.min(dataset.length, start + 16); i++) {
      if (idx.includes(i)) continue;
      try {
        samples.push(await dataset.get(i));
        idx.push(i);
        break;
      } catch (e) {
        if (!(e instanceof SampleReadError)) throw e;
      }
    }
  }
  return { idx, samples };
}

/** Renders and writes OUT/report.html; returns its path. */
export async function writeTrainingReport(engine: Engine, opts: TrainingReportOptions): Promise<string> {
  const metricsPath = join(opts.outDir, 'metrics.jsonl');
  const metrics = parseMetrics(existsSync(metricsPath) ? readFileSync(metricsPath, 'utf8') : '');
  const { idx, samples } = await readableSamples(opts.dataset, reportImageIndices(opts.dataset.length, opts.count ?? 4));
  let pictures: ReportPictureRow[] = [];
  let picturesNote: string | undefined;
  if (samples.length) {
    const v = await computeVisuals(engine, opts.backbone, samples.map((s) => s.image), { size: opts.size });
    pictures = v.images.map((im, k) => ({
      label: `#${idx[k]} ${opts.dataset.classNames[samples[k].label] ?? samples[k].label}`,
      input: im.input,
      attention: im.attention,
      pca: im.pca,
    }));
    picturesNote =
      `Teacher backbone on ${samples.length} fixed training images resized to ${v.side}x${v.side} (${v.grid[0]}x${v.grid[1]} patches): ` +
      "each head's last-layer CLS attention (viridis, min-max per head) over the image, and the first three principal components " +
      'of the last layer\'s patch features as RGB (PCA fitted jointly on these images).';
  }
  const html = renderReport({
    title: 'webdino training report',
    subtitle: [`run folder: ${resolve(opts.outDir)}`, ...(opts.subtitle ?? [])],
    config: opts.config,
    metrics,
    pictures,
    picturesNote,
    generated: new Date().toISOString(),
  });
  const path = join(opts.outDir, 'report.html');
  await writeFileAtomic(path, html);
  return path;
}
