/**
 * How the loaders of this folder print file-controlled text in their errors: names, key lists and
 * snippets are bounded, so one hostile file cannot turn an error into a megabyte-long line (a
 * million-tensor file once gave an 8.9 MB strict-load message).
 *
 * Invariant: every error message built with these helpers is at most a few KB, whatever the file.
 * Pure TypeScript, no Node built-ins.
 */

/** Longest name or snippet printed as is; longer ones are cut (their length is still shown). */
export const MAX_SHOWN_CHARS = 200;

/** Most names printed in one list; the rest are counted ("... and 999,950 more"). */
export const MAX_LISTED_NAMES = 50;

/** `1234567` as "1,234,567". */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** `text` if short, else its first {@link MAX_SHOWN_CHARS} characters and how long it was. */
export function clip(text: string, max = MAX_SHOWN_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${formatCount(text.length)} characters)`;
}

/** A name from a file in quotes, cut when very long: `'blocks.0.attn.qkv.weight'`. */
export function quoteName(name: string): string {
  return `'${clip(name)}'`;
}

/**
 * Up to `max` names joined by ", " (each cut by {@link clip}), then "... and N more" for the rest.
 * Example: `listNames(['a', 'b', 'c'], 2)` is "a, b, ... and 1 more".
 */
export function listNames(names: readonly string[], max = MAX_LISTED_NAMES): string {
  const shown = names.slice(0, max).map((n) => clip(n));
  if (names.length > max) shown.push(`... and ${formatCount(names.length - max)} more`);
  return shown.join(', ');
}

/** The first bytes of a file in hex ("89 50 4e 47 ..."), or "none" for an empty one. */
export function firstBytes(bytes: Uint8Array, count = 8): string {
  return Array.from(bytes.subarray(0, count), (b) => b.toString(16).padStart(2, '0')).join(' ') || 'none';
}
