/**
 * The device layer: adapter features and limits are requested, missing features are clear errors,
 * compile errors name the kernel, and a missing adapter says what to install.
 */
import { describe, expect, it } from 'vitest';
import { Device, DeviceError, NoAdapterError } from '../../index.js';
import { getEngine } from '../helpers.js';

describe('device', () => {
  it('requests the adapter limits rather than the spec defaults', async () => {
    const wd = await getEngine();
    const l = wd.device.limits;
    // The spec defaults are 128 MiB / 256 MiB / 16 KiB / 256; lavapipe offers more on the last two.
    expect(l.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    expect(l.maxComputeWorkgroupStorageSize).toBeGreaterThan(16384);
    expect(l.maxComputeInvocationsPerWorkgroup).toBeGreaterThan(256);
    expect(typeof wd.device.features.shaderF16).toBe('boolean');
    expect(['cpu', 'gpu']).toContain(wd.device.variants);
  });

  it('a missing feature is an error naming the feature and the adapter', async () => {
    const wd = await getEngine();
    const saved = { ...wd.device.features };
    try {
      (wd.device.features as { subgroups: boolean }).subgroups = false;
      expect(() => wd.device.require('subgroups')).toThrow(DeviceError);
      expect(() => wd.device.require('subgroups')).toThrow(/'subgroups'/);
    } finally {
      Object.assign(wd.device.features, saved);
    }
  });

  it('a kernel that fails to compile is reported with its name', async () => {
    const wd = await getEngine();
    const bad = '@compute @workgroup_size(1) fn main() { let x: f32 = nope; }';
    expect((await wd.device.compilationMessages(bad)).join('\n')).toMatch(/nope/);
  });

  it('no adapter: an error that says what to install', async () => {
    const fakeGpu = { requestAdapter: async () => null } as unknown as GPU;
    await expect(Device.create({ gpu: fakeGpu })).rejects.toThrow(NoAdapterError);
    await expect(Device.create({ gpu: fakeGpu })).rejects.toThrow(/mesa-vulkan-drivers/);
  });
});
