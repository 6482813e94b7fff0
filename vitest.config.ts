import { defineConfig } from 'vitest/config';

// Two projects: fast pure unit tests, and integration tests that need root,
// a real btrfs filesystem, a real registry and podman/skopeo/buildah.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // Unit tests run first; integration tests after, with fewer workers.
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          // Files share loop devices and a 2-core machine; keep the load sane.
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
      {
        test: {
          name: 'vm',
          include: ['test/vm/**/*.test.ts'],
          // Booting a VM under TCG takes a minute or two; a test boots
          // several, and building the base OS from cold takes minutes.
          testTimeout: 1_200_000,
          hookTimeout: 900_000,
          // One VM at a time on a 2-core machine, after everything else.
          maxWorkers: 1,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
