/**
 * `webdino report --run DIR`: (re)writes DIR/report.html for an existing run folder, from its
 * metrics.jsonl, the configuration stored in its checkpoint and its teacher backbone. Useful for a
 * run that was stopped before the end, or after `--resume` continued it elsewhere.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describeArch } from '../../models/backbone.js';
import { readCheckpointMetaFile, RUN_FILES } from '../../train/run-folder-node.js';
import { writeTrainingReport } from '../../train/report-node.js';
import { defineCommand, UsageError } from '../command.js';
import { flag, int, path, str } from '../options.js';
import { openData, withBackbone } from '../resources.js';

/** `webdino report`: the training report of a run folder. */
export const report = defineCommand({
  name: 'report',
  summary: 'Write the HTML training report (curves, evaluations, attention and PCA maps) of a run folder',
  description:
    'Reads RUN/metrics.jsonl, the configuration in RUN/checkpoint.safetensors and the teacher in\n' +
    'RUN/teacher_backbone.safetensors, and writes RUN/report.html (self-contained; opens from disk).\n' +
    '`webdino train` writes it at the end of a run; this command redraws it for any run folder.',
  options: {
    run: path({ role: 'input', value: '<dir>', default: 'runs/dino', help: 'The run folder (the --out of webdino train)' }),
    data: str({ value: '<data>', default: 'synthetic', help: 'Images for the pictures; see webdino train --data' }),
    images: int({ min: 0, max: 64, default: 4, value: '<n>', help: 'Number of pictured images' }),
    'allow-empty-classes': flag({ help: 'ImageFolder: keep class folders that hold no image' }),
  },
  async run(v, ctx) {
    const dir = v.run;
    const teacherPath = join(dir, RUN_FILES.teacher);
    const ckptPath = join(dir, RUN_FILES.checkpoint);
    if (!existsSync(join(dir, RUN_FILES.metrics))) throw new UsageError(`${dir} is not a run folder: it has no ${RUN_FILES.metrics}`);
    if (!existsSync(teacherPath)) throw new UsageError(`${dir} has no ${RUN_FILES.teacher} (written at the end of webdino train)`);
    const dataset = openData(ctx, v.data, { defaultSplit: 'train', allowEmptyClasses: v['allow-empty-classes'] });
    const config = existsSync(ckptPath) ? (readCheckpointMetaFile(ckptPath).config as unknown as Record<string, unknown>) : undefined;
    ctx.outputs.check(join(dir, 'report.html'));
    return withBackbone({ weights: teacherPath }, async ({ wd, model, spec }) => {
      // Pictures at twice the training crop, as after `webdino train` (see TrainingReportOptions.size).
      const size = 2 * ((config?.globalSize as number | undefined) ?? spec.imgSize ?? 224);
      const path = await writeTrainingReport(wd, {
        outDir: dir,
        backbone: model,
        size,
        dataset,
        count: v.images,
        config,
        subtitle: [`teacher: ${describeArch(spec)}`],
      });
      ctx.io.out(`report: ${path}`);
      return 0;
    });
  },
});
