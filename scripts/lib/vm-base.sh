#!/usr/bin/env bash
# Builds the root filesystem of the VM tests' base OS: Debian bookworm minbase
# plus a kernel, systemd, udev, btrfs-progs and the host's Node.js, with a
# small initramfs that mounts a btrfs root from a virtio disk, and the test
# units (test/support/vm/guest/) that report on the serial console.
#
#   vm-base.sh OUT_TAR
#
# Writes OUT_TAR (an uncompressed tar of the root filesystem, numeric owners,
# xattrs) atomically. test/support/vm/base.ts caches the result under a hash
# of this file and of the files it copies, so editing the recipe rebuilds.
set -euo pipefail

out=${1:?usage: vm-base.sh OUT_TAR}
here=$(cd "$(dirname "$0")/../.." && pwd)
guest="$here/test/support/vm/guest"
mirror=${OCISNAP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Downloaded packages are kept here, so a recipe change does not fetch again.
cache=${OCISNAP_TEST_CACHE:-/var/tmp/ocisnap-test-cache}

work=$(mktemp -d "$(dirname "$out")/vm-base.XXXXXX")
root="$work/rootfs"
cleanup() {
  for m in var/cache/apt/archives dev/pts dev proc sys; do
    mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
  done
  # --one-file-system: never descend into a bind mount that failed to go.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '%s vm-base: %s\n' "$(date -u +%T)" "$*"; }

# Stage 1: minbase plus what systemd needs to boot. The kernel comes later so
# that the initramfs configuration is in place when its postinst builds one
# (building it twice costs half a minute).
step "debootstrap"
mkdir -p "$cache/debs"
debootstrap --variant=minbase --cache-dir="$cache/debs" \
  --include=systemd-sysv,udev,btrfs-progs,initramfs-tools,zstd,kmod \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Documentation and translations are dead weight in a test image.
cat >"$root/etc/dpkg/dpkg.cfg.d/ocisnap-test-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF

# Only the modules a virtio btrfs root needs: a small initramfs is quick to
# build and quick to load under TCG. crc32c is btrfs's checksum (a soft
# dependency that module tools do not always follow).
cat >"$root/etc/initramfs-tools/conf.d/ocisnap-test.conf" <<'EOF'
MODULES=list
COMPRESS=zstd
EOF
cat >"$root/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
crc32c_generic
btrfs
EOF

step "kernel"
for m in proc sys dev dev/pts; do mkdir -p "$root/$m"; done
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mkdir -p "$cache/debs" "$root/var/cache/apt/archives"
mount --bind "$cache/debs" "$root/var/cache/apt/archives"
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends \
  linux-image-amd64 >"$work/kernel.log" 2>&1 || { tail -n 30 "$work/kernel.log" >&2; exit 1; }
umount "$root/var/cache/apt/archives"

# /boot/vmlinuz and /boot/initrd.img are the stable names the VM harness (and
# a bootloader entry) load; Debian's kernel postinst makes them in /, so add
# relative links in /boot too.
kver=$(basename "$(ls -d "$root"/lib/modules/* | head -n 1)")
ln -sfn "vmlinuz-$kver" "$root/boot/vmlinuz"
ln -sfn "initrd.img-$kver" "$root/boot/initrd.img"
test -s "$root/boot/initrd.img-$kver"
# Fail now rather than at boot if the initramfs lacks what mounts the root.
chroot "$root" lsinitramfs "/boot/initrd.img-$kver" >"$work/initrd.list"
for mod in virtio_blk.ko btrfs.ko; do
  grep -q "/$mod" "$work/initrd.list" || { echo "vm-base: initramfs lacks $mod" >&2; exit 1; }
done
# A VM with a virtio disk and no network needs few drivers: dropping graphics,
# media, sound, wireless and the like halves the image (faster to import,
# push, pull and deploy in every test).
for d in sound drivers/gpu drivers/media drivers/infiniband drivers/iio drivers/staging \
  drivers/net/wireless drivers/net/ethernet drivers/isdn drivers/bluetooth drivers/hwmon \
  drivers/usb/gadget drivers/usb/serial drivers/comedi net/wireless net/mac80211 net/bluetooth; do
  rm -rf "$root/lib/modules/$kver/kernel/$d"
done
chroot "$root" depmod "$kver"
for m in dev/pts dev proc sys; do umount "$root/$m"; done

step "node"
# Debian bookworm's nodejs is 18; ocisnap needs >= 20.18, so use the host's.
install -m 0755 "${OCISNAP_VM_NODE:-$(command -v node)}" "$root/usr/local/bin/node"
env -u NODE_EXTRA_CA_CERTS chroot "$root" /usr/local/bin/node -e 'process.exit(0)'

step "guest units"
install -d "$root/usr/local/lib/ocisnap-test"
install -m 0755 "$guest/marker.sh" "$root/usr/local/lib/ocisnap-test/marker.sh"
for unit in "$guest"/*.service; do
  install -m 0644 "$unit" "$root/etc/systemd/system/$(basename "$unit")"
done
chroot "$root" systemctl enable ocisnap-test-booted.service ocisnap-test-ready.service >/dev/null 2>&1
# Mount points of the test disk's layout (test/support/vm/disk.ts), present
# in the image so they work on a read-only snapshot too.
install -d "$root/.snapshots" "$root/boot/grub"
echo ocisnap-vm >"$root/etc/hostname"
# An empty machine-id: systemd makes one at first boot (see machine-id(5)).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Log in without a password on the serial console (a test VM, no network).
install -d "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
EOF
# Under TCG every module load and every service costs seconds: keep udev
# from loading drivers a test VM has no use for (the i440FX's IDE, KVM, CPU
# frequency, PC speaker, PS/2 mouse), and start no gettys on the absent VGA.
cat >"$root/etc/modprobe.d/ocisnap-test-vm.conf" <<'EOF'
# ocisnap VM tests: drivers a qemu TCG guest with a virtio disk does not need.
blacklist ata_piix
blacklist pata_acpi
blacklist ata_generic
blacklist floppy
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist powernow_k8
blacklist acpi_cpufreq
blacklist pcspkr
blacklist i2c_piix4
blacklist psmouse
blacklist serio_raw
blacklist joydev
EOF
chroot "$root" systemctl mask getty-static.service getty@tty1.service e2scrub_reap.service >/dev/null 2>&1
rm -rf "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/var/log/"*.log

step "tar"
tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -cf "$out.tmp" .
mv "$out.tmp" "$out"
step "done: $(du -h "$out" | cut -f1)"
