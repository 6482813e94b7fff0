#!/usr/bin/env bash
# The main job on an embedded default, on a fresh Debian machine, as root:
#  1. a btrfs filesystem in an image file (created and loop-mounted here),
#  2. an example OS image built locally (debootstrap base + the Containerfile),
#     pushed to a registry on 127.0.0.1,
#  3. `ocisnap pull` of it into a layer store on that filesystem, and Podman
#     listing the very same store.
# Everything lives under $OCISNAP_DEMO_DIR (default /var/tmp/ocisnap-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
ensure_root
ensure_debian_packages
ensure_node_modules
npm run --silent build

demo=${OCISNAP_DEMO_DIR:-/var/tmp/ocisnap-demo}
mkdir -p "$demo/cache"
ocisnap() { node dist/cli/main.js "$@"; }

# 1. The btrfs filesystem.
if ! mountpoint -q "$demo/mnt"; then
  if [ ! -f "$demo/disk.img" ]; then
    truncate -s 8G "$demo/disk.img"
    mkfs.btrfs -q -L ocisnap-demo "$demo/disk.img"
  fi
  mkdir -p "$demo/mnt"
  mount -o loop "$demo/disk.img" "$demo/mnt"
fi
store="$demo/mnt/var/lib/ocisnap/storage"

# 2. The example image: a debootstrap base (cached), then the Containerfile.
builder=(--root "$demo/build-store" --runroot "$demo/build-run" --storage-driver vfs)
if [ ! -f "$demo/cache/base.tar" ]; then
  echo "== debootstrap bookworm minbase (cached in $demo/cache)"
  rm -rf "$demo/cache/rootfs"
  debootstrap --variant=minbase bookworm "$demo/cache/rootfs" >"$demo/cache/debootstrap.log"
  tar -C "$demo/cache/rootfs" --numeric-owner --xattrs --xattrs-include='*' -cf "$demo/cache/base.tar.tmp" .
  mv "$demo/cache/base.tar.tmp" "$demo/cache/base.tar"
  rm -rf "$demo/cache/rootfs"
fi
echo "== building the example image with buildah"
podman "${builder[@]}" import "$demo/cache/base.tar" localhost/ocisnap-example-base:latest >/dev/null
buildah "${builder[@]}" build -q --layers -f Containerfile -t localhost/ocisnap-example:1 . >/dev/null

# A registry on 127.0.0.1 only, stopped when the demo ends.
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat >"$demo/registry.yml" <<YML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $demo/registry-data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
YML
docker-registry serve "$demo/registry.yml" >"$demo/registry.log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false \
  "containers-storage:[vfs@$demo/build-store+$demo/build-run]localhost/ocisnap-example:1" \
  "docker://127.0.0.1:$port/example/os:1"

# 3. Pull it with ocisnap; show it with ocisnap and with Podman.
echo "== ocisnap pull"
ocisnap --storage-root "$store" pull --tls-verify=false "127.0.0.1:$port/example/os:1"
echo "== ocisnap images"
ocisnap --storage-root "$store" images
echo "== podman images on the same store"
podman --root "$store" --runroot "$demo/podman-run" --storage-driver btrfs images
echo
echo "The btrfs filesystem stays mounted at $demo/mnt; to remove everything:"
echo "  umount $demo/mnt && rm -rf $demo"
