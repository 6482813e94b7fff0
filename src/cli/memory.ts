/**
 * Commands that move layers allocate about 1 GiB of 128 KiB–1 MiB buffers in
 * a cold pull (downloads, decompressed tar). By default glibc serves such
 * blocks from its heap once one has been freed, and keeps freed heap memory
 * resident. With every block of 128 KiB or more mmapped, freeing it returns
 * it to the kernel: cold pulls of the benchmark's image peaked at 126–146 MiB
 * RSS instead of 144–159 MiB, with no difference in time beyond the noise.
 */
const layerBufferCommands = new Set(['pull', 'load', 'deploy', 'switch', 'upgrade']);

export async function tuneMemoryFor(command: string): Promise<void> {
  if (!layerBufferCommands.has(command)) return;
  const { sys } = await import('../sys/native.js');
  sys.setMmapThreshold(128 * 1024);
}
