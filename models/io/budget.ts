/**
 * The allocation budget of one load.
 *
 * A hostile weights file is small but can describe huge things: a stride-0 tensor of 2^28 elements
 * over one stored float, a deflated zip entry that inflates a thousandfold, many tensors viewing one
 * storage. So a loader whose allocations are not bounded by the file itself sizes each allocation
 * whose size the file controls BEFORE making it, and charges it to a {@link LoadBudget}; past the
 * limit the load is refused with one line that says how to raise it.
 *
 * The default limit is {@link LOAD_BUDGET_FACTOR} times the file size, at least
 * {@link MIN_LOAD_BUDGET}: float32 copies of 1-byte storages are 4x their bytes, and a few tensors
 * may view one storage (tied or sliced weights); the floor keeps small files free of the question.
 * Pure TypeScript, no Node built-ins.
 */

import { formatCount } from './error-text.js';

/** Default budget, in multiples of the file size. */
export const LOAD_BUDGET_FACTOR = 8;

/** Smallest default budget (64 MiB), whatever the file size. */
export const MIN_LOAD_BUDGET = 64 * 2 ** 20;

/** The default budget for a file of `fileBytes` bytes. */
export function defaultLoadBudget(fileBytes: number): number {
  return Math.max(LOAD_BUDGET_FACTOR * fileBytes, MIN_LOAD_BUDGET);
}

/** `1073741824` as "1 GiB", `668` as "668 bytes" (exact byte counts stay in the message too). */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  if (n < 1024) return `${n} bytes`;
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, '')} ${units[u]}`;
}

/** Bytes one load may allocate for data whose size the file controls. */
export class LoadBudget {
  private used = 0;

  constructor(
    /** Most bytes allowed in all. */
    readonly limit: number,
    /** Size of the file being loaded (for the message). */
    readonly fileBytes: number,
    /** True when `limit` is the default (the message then says how it was derived). */
    private readonly isDefault: boolean,
  ) {}

  /** A budget of `maxBytes`, or the default for the file when it is undefined. */
  static forFile(fileBytes: number, maxBytes?: number): LoadBudget {
    if (maxBytes !== undefined && !(maxBytes >= 0)) throw new RangeError(`maxBytes must be a non-negative number (got ${maxBytes})`);
    return new LoadBudget(maxBytes ?? defaultLoadBudget(fileBytes), fileBytes, maxBytes === undefined);
  }

  /** Bytes charged so far. */
  get spent(): number {
    return this.used;
  }

  /**
   * Charges `bytes` about to be allocated for `what`; when they do not fit, calls `fail` (which
   * throws the loader's own error type) with a one-line reason, before anything is allocated.
   * `hint` (e.g. "a zip bomb?") goes in the reason.
   */
  charge(bytes: number, what: string, fail: (message: string) => never, hint?: string): void {
    if (this.used + bytes <= this.limit) {
      this.used += bytes;
      return;
    }
    const how = this.isDefault
      ? `the default for a ${formatCount(this.fileBytes)}-byte file: ${LOAD_BUDGET_FACTOR}x its size, at least ${formatBytes(MIN_LOAD_BUDGET)}`
      : 'set by maxBytes';
    const spent = this.used ? `, ${formatBytes(this.used)} of it already used` : '';
    fail(
      `${what} needs ${formatBytes(bytes)} (${formatCount(bytes)} bytes), past the load budget of ${formatBytes(this.limit)} (${how}${spent})${hint ? `; ${hint}` : ''}. Refused before allocating; pass a larger maxBytes if the file is trusted`,
    );
  }
}
