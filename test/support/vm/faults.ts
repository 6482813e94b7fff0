/**
 * Ways to make a snapshot fail to boot, for rollback tests.
 */

/**
 * A valid but empty initramfs: a newc cpio archive holding only its trailer
 * (linux Documentation/driver-api/early-userspace/buffer-format.rst). A kernel
 * given it has no /init and no virtio or btrfs drivers, so it panics with
 * "VFS: Unable to mount root fs" a few seconds after it starts, and with
 * panic=1 resets: a snapshot that can never reach its health check.
 */
export function emptyInitramfs(): Buffer {
  const name = 'TRAILER!!!\0';
  // c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize c_devmajor c_devminor
  // c_rdevmajor c_rdevminor c_namesize c_check
  const fields = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, name.length, 0];
  const header = '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('') + name;
  const aligned = header.padEnd(Math.ceil(header.length / 4) * 4, '\0');
  return Buffer.from(aligned.padEnd(512, '\0'), 'latin1');
}
