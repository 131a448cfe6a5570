/**
 * AdamW over DINOv2's parameter groups, the teacher EMA, and where the parameters live.
 *
 * The student is one parameter arena and the teacher another of the same layout (the student's
 * parameter order: backbone, dino_head, ibot_head), so AdamW and the EMA are one dispatch per
 * arena chunk, as for DINO v1. The groups of param-groups.ts (equal lr multiplier, wd multiplier
 * and last-layer flag) become per-parameter multipliers of the one AdamW (engine/optim.ts
 * AdamWOptions.multipliers); per iteration, as apply_optim_scheduler:
 *   group.lr           = (is_last_layer ? last_layer_lr : lr) · lr_multiplier
 *   group.weight_decay = wd · wd_multiplier
 * with lr and wd as AdamW's uniforms. The last-layer schedule is the lr schedule with its first
 * freeze_last_layer_epochs set to 0 (schedules.ts), so a last-layer parameter's multiplier is
 * lr_multiplier · (last_layer_lr / lr): lr_multiplier or 0. A last-layer parameter at lr 0 (the
 * frozen start) still takes AdamW steps: m, v and the step count advance while the weights stay
 * put (torch AdamW with lr = 0), unlike DINO v1's cancelled gradients.
 */
import type { Engine } from '../../engine/engine.js';
import { AdamW, type AdamWState, emaUpdate, ParamArena } from '../../engine/optim.js';
import type { Tensor } from '../../engine/tensor.js';
import type { Module } from '../../models/nn.js';
import type { FusedGroup } from './param-groups.js';

export interface GroupedAdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/** Moves every parameter of `m` into `arena` in order (the module then uses the arena's views). */
function moveInto(m: Module, arena: ParamArena, requiresGrad: boolean | null): void {
  for (const [name, t] of m.namedParameters()) {
    const trainable = requiresGrad ?? t.requiresGrad;
    const view = arena.add(name, t, undefined, { requiresGrad: trainable });
    const old = m.replaceTensor(name, view);
    view.requiresGrad = trainable;
    old.dispose();
  }
}

export class GroupedAdamW {
  /** The fused groups (keys and parameter names), for reports and tests. */
  readonly groups: readonly FusedGroup[];
  readonly student: ParamArena;
  readonly teacher: ParamArena;
  readonly adamw: AdamW;
  private readonly groupByName = new Map<string, FusedGroup>();
  /** The last-layer lr ratio the multipliers hold now (1 or 0 for the official schedules). */
  private lastLayerRatio = 1;

  constructor(
    readonly engine: Engine,
    student: Module,
    teacher: Module,
    fused: readonly FusedGroup[],
    opts: GroupedAdamWOptions = {},
  ) {
    const names = student.namedParameters().map(([n]) => n);
    for (const g of fused) for (const n of g.names) this.groupByName.set(n, g);
    const missing = names.filter((n) => !this.groupByName.has(n));
    if (missing.length || this.groupByName.size !== names.length) {
      throw new Error(`DINOv2 optimizer: the groups hold ${this.groupByName.size} parameters, the student has ${names.length}${missing.length ? ` (ungrouped: ${missing.slice(0, 3).join(', ')})` : ''}`);
    }
    this.groups = fused;
    const capacity = student.numParameters() + 64 * names.length;
    this.student = new ParamArena(engine, { capacity, label: 'student' });
    this.teacher = new ParamArena(engine, { capacity, requiresGrad: false, label: 'teacher' });
    moveInto(student, this.student, null);
    moveInto(teacher, this.teacher, false);
    this.teacher.copyFrom(this.student); // the teacher starts as the student
    this.adamw = new AdamW(this.student, {
      lr: 0,
      weightDecay: 0,
      beta1: opts.beta1,
      beta2: opts.beta2,
      eps: opts.eps,
      multipliers: (n) => {
        const k = this.groupOf(n).key;
        return { lr: k.lrMultiplier, wd: k.wdMultiplier };
      },
    });
  }

  /** This iteration's hyperparameters (apply_optim_scheduler). */
  setSchedule(lr: number, weightDecay: number, lastLayerLr: number): void {
    this.adamw.lr = lr;
    this.adamw.weightDecay = weightDecay;
    let ratio: number;
    if (lastLayerLr === lr) ratio = 1;
    else if (lastLayerLr === 0) ratio = 0;
    else if (lr > 0) ratio = lastLayerLr / lr;
    else throw new Error(`DINOv2 optimizer: last-layer lr ${lastLayerLr} with lr ${lr} cannot be a multiplier of it`);
    if (ratio === this.lastLayerRatio) return;
    this.lastLayerRatio = ratio;
    for (const g of this.groups) {
      if (!g.key.isLastLayer) continue;
      for (const n of g.names) this.adamw.setMultipliers(n, { lr: g.key.lrMultiplier * ratio });
    }
  }

  /** One AdamW step over the whole student (gathers each parameter's `.grad` first). */
  step(): void {
    this.adamw.step();
  }

  zeroGrad(): void {
    this.adamw.zeroGrad();
  }

  /** teacher ← m·teacher + (1 − m)·student over every parameter. */
  emaUpdate(momentum: number): void {
    emaUpdate(this.teacher, this.student, momentum);
  }

  /** The group holding parameter `name`. */
  groupOf(name: string): FusedGroup {
    const g = this.groupByName.get(name);
    if (!g) throw new Error(`DINOv2 optimizer: no group holds '${name}'`);
    return g;
  }

  /** Parameters of the student in arena order. */
  get params(): Tensor[] {
    return this.student.params;
  }

  /** AdamW's state (m, v flat in the student's parameter order, step counts). The caller frees m and v. */
  state(): AdamWState {
    return this.adamw.state();
  }

  loadState(s: { step: number; m: Tensor; v: Tensor; paramSteps?: readonly number[] }): void {
    this.adamw.loadState(s);
  }

  dispose(): void {
    this.adamw.dispose();
    this.student.dispose();
    this.teacher.dispose();
  }
}
