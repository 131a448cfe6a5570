/**
 * AdamW over DINOv2's parameter groups, the teacher EMA, and where the parameters live.
 *
 * The engine's AdamW has one lr and one weight decay per arena (plus a 0/1 decay mask), so each
 * fused group (param-groups.ts: equal lr multiplier, wd multiplier and last-layer flag) gets its
 * own pair of parameter arenas (student, teacher) and its own AdamW. Per iteration, as
 * apply_optim_scheduler:
 *   group.lr = (is_last_layer ? last_layer_lr : lr) · lr_multiplier
 *   group.weight_decay = wd · wd_multiplier
 * A last-layer group at lr 0 (the frozen start) still takes AdamW steps: m, v and the step count
 * advance while the weights stay put (torch AdamW with lr = 0), unlike DINO v1's cancelled
 * gradients.
 *
 * Cost: one AdamW and one EMA dispatch per group (~30 groups for a ViT-S and one head) instead of
 * one per arena chunk. The engine change that removes it: per-segment lr and weight-decay
 * multipliers in AdamW's per-segment table (today (active, decay, 1−β₁ᵗ, 1−β₂ᵗ); `decay` would become
 * a float wd multiplier and an lr multiplier would join it), set once from the groups; then one
 * arena holds the whole student again, and the EMA is one dispatch.
 *
 * Invariant: the student and teacher arenas of a group receive the same parameters in the same
 * order, so the EMA can run arena against arena.
 */
import type { Engine } from '../../engine/engine.js';
import { AdamW, type AdamWState, emaUpdate, ParamArena } from '../../engine/optim.js';
import type { Tensor } from '../../engine/tensor.js';
import type { Module } from '../../models/nn.js';
import type { FusedGroup, ParamGroupKey } from './param-groups.js';

export interface GroupedAdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/** One optimizer group: its key, its parameters (student and teacher arenas) and its AdamW. */
export interface OptimGroup {
  readonly key: ParamGroupKey;
  readonly names: readonly string[];
  readonly student: ParamArena;
  readonly teacher: ParamArena;
  readonly adamw: AdamW;
}

/** Moves the named parameters of `m` into `arena` (the module then uses the arena's views). */
function moveInto(m: Module, params: Map<string, Tensor>, names: readonly string[], arena: ParamArena, requiresGrad: boolean | null): void {
  for (const name of names) {
    const t = params.get(name);
    if (!t) throw new Error(`DINOv2 optimizer: no parameter '${name}'`);
    const trainable = requiresGrad ?? t.requiresGrad;
    const view = arena.add(name, t, undefined, { requiresGrad: trainable });
    const old = m.replaceTensor(name, view);
    view.requiresGrad = trainable;
    old.dispose();
  }
}

export class GroupedAdamW {
  readonly groups: OptimGroup[];

  constructor(
    readonly engine: Engine,
    student: Module,
    teacher: Module,
    fused: readonly FusedGroup[],
    opts: GroupedAdamWOptions = {},
  ) {
    const sp = new Map(student.namedParameters());
    const tp = new Map(teacher.namedParameters());
    const covered = fused.reduce((a, g) => a + g.names.length, 0);
    if (covered !== sp.size) throw new Error(`DINOv2 optimizer: the groups hold ${covered} parameters, the student has ${sp.size}`);
    this.groups = fused.map((g, i) => {
      const numel = g.names.reduce((a, n) => a + (sp.get(n)?.size ?? 0), 0);
      const capacity = numel + 64 * g.names.length;
      const s = new ParamArena(engine, { capacity, label: `student-g${i}` });
      const t = new ParamArena(engine, { capacity, requiresGrad: false, label: `teacher-g${i}` });
      moveInto(student, sp, g.names, s, null);
      moveInto(teacher, tp, g.names, t, false);
      t.copyFrom(s); // the teacher starts as the student
      const adamw = new AdamW(s, { lr: 0, weightDecay: 0, wdMask: () => true, beta1: opts.beta1, beta2: opts.beta2, eps: opts.eps });
      return { key: g.key, names: g.names, student: s, teacher: t, adamw };
    });
  }

  /** This iteration's hyperparameters (apply_optim_scheduler). */
  setSchedule(lr: number, weightDecay: number, lastLayerLr: number): void {
    for (const g of this.groups) {
      g.adamw.lr = (g.key.isLastLayer ? lastLayerLr : lr) * g.key.lrMultiplier;
      g.adamw.weightDecay = weightDecay * g.key.wdMultiplier;
    }
  }

  /** One AdamW step of every group (gathers each arena's `.grad` first). */
  step(): void {
    for (const g of this.groups) g.adamw.step();
  }

  zeroGrad(): void {
    for (const g of this.groups) g.adamw.zeroGrad();
  }

  /** teacher ← m·teacher + (1 − m)·student over every group. */
  emaUpdate(momentum: number): void {
    for (const g of this.groups) emaUpdate(g.teacher, g.student, momentum);
  }

  /** The group holding parameter `name`. */
  groupOf(name: string): OptimGroup {
    const g = this.groups.find((x) => x.names.includes(name));
    if (!g) throw new Error(`DINOv2 optimizer: no group holds '${name}'`);
    return g;
  }

  /** Per group: AdamW's state (m, v flat in the group's order, step counts). The caller frees m and v. */
  state(): AdamWState[] {
    return this.groups.map((g) => g.adamw.state());
  }

  loadState(states: readonly AdamWState[]): void {
    if (states.length !== this.groups.length) throw new Error(`DINOv2 optimizer: ${states.length} group states for ${this.groups.length} groups`);
    this.groups.forEach((g, i) => g.adamw.loadState(states[i]));
  }

  dispose(): void {
    for (const g of this.groups) {
      g.adamw.dispose();
      g.student.dispose();
      g.teacher.dispose();
    }
  }
}
