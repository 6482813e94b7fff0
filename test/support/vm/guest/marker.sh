#!/bin/sh
# Reports the VM's progress on the serial console for the test harness
# (test/support/vm/): `marker.sh booted` early in boot, `marker.sh ready` once
# multi-user.target is reached. Lines start with "OCISNAP-TEST: " and are
# key=value pairs; the harness parses them (test/support/vm/serial.ts).
set -u
state=/var/lib/ocisnap-test
mkdir -p "$state"

say() {
  # The serial port directly, so the line is there whatever the console
  # settings are, and the journal for `journalctl -u`.
  printf 'OCISNAP-TEST: %s\n' "$*" >/dev/ttyS0 2>/dev/null || true
  printf 'OCISNAP-TEST: %s\n' "$*"
}

# The subvolume mounted at / (field 4 of the mount whose mount point, field 5,
# is /; see proc(5)), e.g. /.snapshots/2/snapshot.
rootsubvol=$(awk '$5 == "/" { r = $4 } END { print r }' /proc/self/mountinfo)
snapshot=$(printf '%s\n' "$rootsubvol" | sed -n 's|^/\.snapshots/\([0-9][0-9]*\)/snapshot$|\1|p')
[ -n "$snapshot" ] || snapshot=none
version=$(. /etc/os-release 2>/dev/null; printf '%s' "${VERSION_ID:-unknown}")
bootid=$(cat /proc/sys/kernel/random/boot_id)

cmdline_value() {
  for word in $(cat /proc/cmdline); do
    case $word in "$1="*) printf '%s' "${word#*=}"; return ;; esac
  done
}

case ${1:-} in
booted)
  say "booted snapshot=$snapshot subvol=$rootsubvol version=$version boot_id=$bootid"
  printf '%s booted snapshot=%s version=%s boot_id=%s\n' \
    "$(date -u +%FT%TZ)" "$snapshot" "$version" "$bootid" >>"$state/boots.log"
  sync "$state/boots.log"
  ;;
ready)
  # A run-once script that reboots makes systemd stop this unit while it
  # reports; finish the report (the unit has KillMode=process, so only this
  # shell gets the signal, and a trap, unlike an ignored signal, is not
  # inherited by the script).
  trap 'echo "marker: stop requested, finishing the report" >&2' TERM
  failed=$(systemctl list-units --state=failed --no-legend --plain 2>/dev/null | awk '{ print $1 }' | paste -sd, -)
  say "ready snapshot=$snapshot target=multi-user failed=${failed:-none} boot_id=$bootid"
  printf '%s ready snapshot=%s\n' "$(date -u +%FT%TZ)" "$snapshot" >>"$state/boots.log"
  # A script the harness left on the disk for this boot runs once: renamed
  # first, so a script that reboots or hangs is not run again. It replaces the
  # command line's action for this boot (it may reboot or power off itself).
  action=$(cmdline_value ocisnap.test.action)
  if [ -f "$state/run-once.sh" ]; then
    action=none
    mv "$state/run-once.sh" "$state/run-once.running"
    sync "$state"
    sh "$state/run-once.running" >"$state/run-once.log" 2>&1
    rc=$?
    mv "$state/run-once.running" "$state/run-once.done"
    sed 's/^/OCISNAP-TEST-OUT: /' "$state/run-once.log" >/dev/ttyS0 2>/dev/null || true
    say "run-once exit=$rc"
  fi
  sync
  case $action in
    poweroff) say "action=poweroff"; systemctl --no-block poweroff ;;
    reboot) say "action=reboot"; systemctl --no-block reboot ;;
  esac
  ;;
*)
  echo "usage: marker.sh booted|ready" >&2
  exit 2
  ;;
esac
