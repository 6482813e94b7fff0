#!/usr/bin/env bash
# The main job on an embedded default, on a fresh Debian machine, as root:
#  1. a btrfs filesystem in an image file, created and loop-mounted here, laid
#     out like a MicroOS root (a .snapshots subvolume, /var, snapshot 1);
#  2. the example OS image built locally from the Containerfile (a debootstrap
#     base with a kernel and systemd, plus ocisnap and its boot health units),
#     pushed to a registry on 127.0.0.1;
#  3. `ocisnap pull` of it into the layer store on that filesystem (Podman
#     lists the very same store), then `ocisnap deploy` as the next boot
#     snapshot, and `ocisnap status`.
# Everything lives under $OCISNAP_DEMO_DIR (default /var/tmp/ocisnap-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
ensure_root
ensure_debian_packages
ensure_node_modules
npm run --silent build

demo=${OCISNAP_DEMO_DIR:-/var/tmp/ocisnap-demo}
mnt="$demo/mnt"
mkdir -p "$demo/cache"
ocisnap() { dist/bin/main.js --sysroot "$mnt" "$@"; }

# 1. The btrfs filesystem: top level = the sysroot ocisnap acts on.
if ! mountpoint -q "$mnt"; then
  if [ ! -f "$demo/disk.img" ]; then
    truncate -s 12G "$demo/disk.img"
    mkfs.btrfs -q -L ocisnap-demo "$demo/disk.img"
    mkdir -p "$mnt"
    mount -o loop "$demo/disk.img" "$mnt"
    btrfs -q subvolume create "$mnt/.snapshots"
    btrfs -q subvolume create "$mnt/var"
    umount "$mnt"
  fi
  mkdir -p "$mnt"
  mount -o loop "$demo/disk.img" "$mnt"
fi

# 2. The example image: the bootable base (cached), then the Containerfile.
if [ ! -f "$demo/cache/bootable-base.tar" ]; then
  echo "== building the bootable base with debootstrap (a few minutes, cached in $demo/cache)"
  bash scripts/lib/vm-base.sh "$demo/cache/bootable-base.tar"
fi
echo "== staging ocisnap for the image"
stage=build/image-stage
rm -rf "$stage" && mkdir -p "$stage/build/Release"
cp -a dist package.json "$stage/"
cp build/Release/ocisnap_sys.node "$stage/build/Release/"
npm ls --omit=dev --all --parseable 2>/dev/null | grep "^$PWD/node_modules/" | while read -r dir; do
  mkdir -p "$stage/$(dirname "${dir#"$PWD"/}")"
  cp -a "$dir" "$stage/${dir#"$PWD"/}"
done
echo "== building the example image with buildah"
builder=(--root "$demo/build-store" --runroot "$demo/build-run" --storage-driver vfs)
podman "${builder[@]}" import -q "$demo/cache/bootable-base.tar" localhost/ocisnap-example-base:latest >/dev/null
buildah "${builder[@]}" build -q --build-arg BASE=localhost/ocisnap-example-base:latest \
  --build-arg OCISNAP_STAGE="$stage" -f Containerfile -t localhost/ocisnap-example:1 . >/dev/null

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
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
image="127.0.0.1:$port/example/os:1"
buildah "${builder[@]}" push -q --tls-verify=false localhost/ocisnap-example:1 "docker://$image"

# 3. Pull, show, deploy.
echo "== ocisnap pull $image"
ocisnap pull --tls-verify=false --progress plain "$image"
echo "== ocisnap images"
ocisnap images
echo "== podman images, on the same store"
podman --root "$mnt/var/lib/ocisnap/storage" --runroot "$demo/podman-run" --storage-driver btrfs images
echo "== ocisnap deploy $image"
ocisnap deploy --tls-verify=false --no-hooks "$image"
echo "== ocisnap status"
ocisnap status
echo
echo "The btrfs filesystem stays mounted at $mnt; to remove everything:"
echo "  umount $mnt && rm -rf $demo"
