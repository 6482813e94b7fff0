# Shared set-up steps for scripts/*.sh (sourced, not run).

# Debian packages the tests, the demo and the benchmark use.
OCISNAP_DEBIAN_PACKAGES=(
  btrfs-progs docker-registry podman skopeo buildah umoci snapper
  libarchive-tools debootstrap apache2-utils gnupg attr time zstd libzstd-dev
  golang-github-containers-common
  python3 make g++ ca-certificates curl iproute2
  qemu-system-x86 grub-pc-bin
)

ensure_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "ocisnap: this needs root (btrfs, loop devices, mknod): run it with sudo" >&2
    exit 1
  fi
}

ensure_debian_packages() {
  local missing=()
  for p in "${OCISNAP_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  # `ocisnap pull` enforces /etc/containers/policy.json as podman does (a
  # missing file is an error); Debian's golang-github-containers-common
  # installs it (insecureAcceptAnything). A deleted conffile is not restored
  # by apt-get install, so say how.
  if [ ! -f /etc/containers/policy.json ]; then
    echo "ocisnap: /etc/containers/policy.json is missing; restore it with:" >&2
    echo "  apt-get install --reinstall -o Dpkg::Options::=--force-confmiss golang-github-containers-common" >&2
    exit 1
  fi
  # Debian's docker-registry package starts a registry on :5000 of every
  # address where systemd runs; the tests start their own on 127.0.0.1 only.
  if command -v systemctl >/dev/null && systemctl is-enabled docker-registry >/dev/null 2>&1; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
}

ensure_node_modules() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
  if [ ! -f build/Release/ocisnap_sys.node ] || [ native/ocisnap_sys.c -nt build/Release/ocisnap_sys.node ]; then
    npx node-gyp rebuild >/dev/null
  fi
}
