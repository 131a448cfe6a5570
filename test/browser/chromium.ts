/**
 * Shared launcher for the browser tests: Debian's Chromium driven by playwright-core (which never
 * downloads a browser). WebGPU needs a secure context, so pages are served from http://127.0.0.1.
 *
 * `chromiumPath()` is null when no Chromium is installed; browser tests then skip with a note
 * (`scripts/setup.sh --browser`, run by `npm test`, installs it on Debian).
 */
import { existsSync } from 'node:fs';
import type { Browser, LaunchOptions } from 'playwright-core';

/** The flags of the developers' guide: WebGPU on, no sandbox (root in CI), no background traffic. */
export const CHROMIUM_FLAGS = [
  '--enable-unsafe-webgpu',
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
] as const;

/** Path of the Chromium executable (WEBDINO_CHROMIUM, else /usr/bin/chromium), or null if absent. */
export function chromiumPath(): string | null {
  const path = process.env.WEBDINO_CHROMIUM ?? '/usr/bin/chromium';
  return existsSync(path) ? path : null;
}

/** Launches headless Chromium with {@link CHROMIUM_FLAGS} plus `extraArgs`. */
export async function launchChromium(extraArgs: string[] = [], options: LaunchOptions = {}): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error('no Chromium: install Debian\'s chromium or set WEBDINO_CHROMIUM');
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath, headless: true, args: [...CHROMIUM_FLAGS, ...extraArgs], ...options });
}
