/**
 * `webdino report --run DIR`: (re)writes DIR/report.html for an existing run folder, from its
 * metrics.jsonl, the configuration stored in its checkpoint and its teacher backbone. Useful for a
 * run that was stopped before the end, or after `--resume` continued it elsewhere.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { init } from '../../index.js';
import { readBytes } from '../../models/io/node-files.js';
import { readCheckpointMeta } from '../../train/checkpoint.js';
import { openDataset } from '../../train/data/open-node.js';
import { describeArch } from '../../models/backbone.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { writeTrainingReport } from '../../train/report-node.js';
import { type Command, intOption, strOption, UsageError } from '../command.js';

/** `webdino report`: the training report of a run folder. */
export const report: Command = {
  name: 'report',
  summary: 'Write the HTML training report (curves, evaluations, attention and PCA maps) of a run folder',
  description:
    'Reads RUN/metrics.jsonl, the configuration in RUN/checkpoint.safetensors and the teacher in\n' +
    'RUN/teacher_backbone.safetensors, and writes RUN/report.html (self-contained; opens from disk).\n' +
    '`webdino train` writes it at the end of a run; this command redraws it for any run folder.',
  options: {
    run: { type: 'string', value: '<dir>', description: 'The run folder (the --out of webdino train; default: runs/dino)' },
    data: { type: 'string', value: '<data>', description: "Images for the pictures (default: 'synthetic'); see webdino train --data" },
    images: { type: 'string', value: '<n>', description: 'Number of pictured images (default: 4)' },
  },
  async run(v, io) {
    const dir = strOption(v.run) ?? 'runs/dino';
    const teacherPath = join(dir, 'teacher_backbone.safetensors');
    const ckptPath = join(dir, 'checkpoint.safetensors');
    if (!existsSync(join(dir, 'metrics.jsonl'))) throw new UsageError(`${dir} is not a run folder: it has no metrics.jsonl`);
    if (!existsSync(teacherPath)) throw new UsageError(`${dir} has no teacher_backbone.safetensors (written at the end of webdino train)`);
    const count = intOption('images', v.images, 0, 64) ?? 4;
    const dataset = openDataset(strOption(v.data) ?? 'synthetic', { defaultSplit: 'train', onWarning: (m) => io.err(`warning: ${m}`) });
    const config = existsSync(ckptPath) ? (readCheckpointMeta(await readBytes(ckptPath)).config as unknown as Record<string, unknown>) : undefined;
    const wd = await init();
    try {
      const { model, spec } = await loadBackbone(wd, teacherPath);
      try {
        // Pictures at twice the training crop, as after `webdino train` (see TrainingReportOptions.size).
        const size = 2 * ((config?.globalSize as number | undefined) ?? spec.imgSize ?? 224);
        const path = await writeTrainingReport(wd, {
          outDir: dir,
          backbone: model,
          size,
          dataset,
          count,
          config,
          subtitle: [`teacher: ${describeArch(spec)}`],
        });
        io.out(`report: ${path}`);
        return 0;
      } finally {
        model.dispose();
      }
    } finally {
      wd.destroy();
    }
  },
};
