/**
 * Commands that move layers allocate about 1 GiB of 128 KiB–1 MiB buffers in
 * a cold pull (downloads, decompressed tar). By default glibc serves such
 * blocks from its heap once one has been freed, and keeps freed heap memory
 * resident: a cold pull peaked at 144–159 MiB RSS. With every block of
 * 128 KiB or more mmapped, freeing it returns it to the kernel: 129–137 MiB,
 * at no measurable cost in time (bench/RESULTS.md).
 */
const layerBufferCommands = new Set(['pull', 'load', 'deploy', 'switch', 'upgrade']);

export async function tuneMemoryFor(command: string): Promise<void> {
  if (!layerBufferCommands.has(command)) return;
  const { sys } = await import('../sys/native.js');
  sys.setMmapThreshold(128 * 1024);
}
