/**
 * tukit is not packaged for Debian bookworm (`apt-cache policy tukit
 * transactional-update` knows neither), so the tukit plugin tests replay
 * what tukit does around its plugins, step by step, from its source
 * (openSUSE/transactional-update):
 *
 * - tukit/tukit.cpp + lib/Transaction.cpp: the order of the stages;
 * - lib/Plugins.cpp: each plugin runs as `<plugin> <stage> [args]`, args
 *   joined with spaces (PATH ID for transaction stages), nothing on stdin;
 * - lib/Snapshot/Snapper.cpp: `snapper create --from BASE --read-write
 *   --print-number --description '...' --userdata
 *   'transactional-update-in-progress=yes'` (with --no-dbus as tukit falls
 *   back to), `snapper modify -u 'transactional-update-in-progress=' ID` at
 *   close, `snapper modify --default ID` or else `btrfs subvolume set-default`,
 *   `snapper delete ID` on abort;
 * - Transaction::impl::snapMount: a new mount namespace (here `unshare -m`),
 *   the snapshot bind-mounted at /tmp/transactional-update-XXXXXX, with /dev,
 *   /proc, /sys, /var/log, /.snapshots bind-mounted and tmpfs /tmp and /run
 *   below it.
 *
 * Deviations: the transaction's command is not chrooted into PATH (the test
 * images have no shell); the script reads PATH/etc/os-release from outside as
 * that command would see it. A plugin that exits non-zero aborts the
 * transaction, as DESIGN.md specifies, unless TUKIT_IGNORE_PLUGIN_ERRORS=1:
 * then failures are logged and ignored, as tukit's current Plugins::run does.
 * Arguments reach the plugin as separate words; tukit joins them into one
 * shell command line, which splits the same way for these (space-free) ones.
 */
import { execa } from 'execa';

const common = String.raw`
set -eu
log() { printf '%s\n' "$*" >>"$LOG"; }
plugin() { log "+ ocisnap $*"; "$PLUGIN" "$@" </dev/null >>"$LOG" 2>&1; }
snap() { snapper --no-dbus -c "$CFG" "$@"; }
mount_snapshot() {
  BIND=$(mktemp -d /tmp/transactional-update-XXXXXX)
  mount --bind "$ROOT/.snapshots/$1/snapshot" "$BIND"
  for d in dev proc sys; do mkdir -p "$BIND/$d"; mount --rbind "/$d" "$BIND/$d"; done
  mkdir -p "$ROOT/var/log" "$BIND/var/log"; mount --bind "$ROOT/var/log" "$BIND/var/log"
  mkdir -p "$BIND/.snapshots"; mount --bind "$ROOT/.snapshots" "$BIND/.snapshots"
  for d in tmp run; do mkdir -p "$BIND/$d"; mount -t tmpfs tmpfs "$BIND/$d"; done
}
umount_snapshot() { umount -R "$BIND"; rmdir "$BIND"; }
abort() {
  umount_snapshot
  snap delete "$ID"
  plugin abort-post "$ID" || true
  echo "aborted $ID"
  exit 0
}
# TUKIT_IGNORE_PLUGIN_ERRORS=1: as tukit's Plugins::run today, log a failed plugin and go on.
step() {
  plugin "$@" || if [ "${'$'}{TUKIT_IGNORE_PLUGIN_ERRORS:-0}" = 1 ]; then log "plugin $1 failed (ignored)"; else abort; fi
}
finalize() {
  step finalize-pre "$BIND" "$ID"
  sync
  umount_snapshot
  snap modify -u 'transactional-update-in-progress=' "$ID"
  snap modify --default "$ID" 2>/dev/null || btrfs -q subvolume set-default "$ROOT/.snapshots/$ID/snapshot"
  plugin finalize-post "$ID" || echo "finalize-post failed"
  echo "finalized $ID"
}
create() {
  plugin init-pre || exit 1
  ID=$(snap create --from "$BASE" --read-write --print-number --description "Snapshot Update of #$BASE" --userdata 'transactional-update-in-progress=yes')
  mount_snapshot "$ID"
  step init-post "$BIND" "$ID"
}
`;

/** `tukit execute CMD` (CMD_FAIL=1: the command fails, and tukit discards the snapshot). */
const execute = String.raw`
create
step execute-pre "$BIND" "$ID" $CMD
cat "$BIND/etc/os-release" >"$CMD_SAW"
step execute-post "$BIND" "$ID" $CMD
if [ "${'$'}{CMD_FAIL:-0}" = 1 ]; then abort; fi
finalize
`;

/** `tukit open`: prints "ID: N" as tukit does. */
const open = String.raw`
create
step keep-pre "$BIND" "$ID"
umount_snapshot
plugin keep-post "$ID"
echo "ID: $ID"
`;

/** `tukit close ID`. */
const close = String.raw`
plugin resume-pre "$ID" || exit 1
mount_snapshot "$ID"
step resume-post "$BIND" "$ID"
finalize
`;

/** `tukit abort ID`. */
const abortCmd = String.raw`
BIND=$(mktemp -d /tmp/transactional-update-XXXXXX); mount --bind "$ROOT/.snapshots/$ID/snapshot" "$BIND"
abort
`;

export type TukitFlow = 'execute' | 'open' | 'close' | 'abort';

const flows: Record<TukitFlow, string> = { execute, open, close, abort: abortCmd };

export interface TukitRun {
  stdout: string;
  exitCode: number;
}

/**
 * Runs one tukit command's worth of plugin calls in a private mount
 * namespace. `env` must give ROOT (sysroot), CFG (snapper config), PLUGIN,
 * LOG (plugin output is appended), and per flow BASE, CMD, CMD_SAW or ID;
 * OCISNAP_* variables reach the plugin as tukit's environment would.
 */
export async function runTukit(flow: TukitFlow, env: Record<string, string>): Promise<TukitRun> {
  const r = await execa('unshare', ['-m', '--propagation', 'private', 'sh', '-c', common + flows[flow]], {
    env,
    extendEnv: true,
    reject: false,
    stdin: 'ignore',
  });
  if (r.exitCode !== 0) throw new Error(`tukit ${flow} emulation failed (${r.exitCode}): ${r.stderr || r.stdout}`);
  return { stdout: r.stdout, exitCode: r.exitCode ?? -1 };
}
