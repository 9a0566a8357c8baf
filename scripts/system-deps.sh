#!/usr/bin/env bash
# Install the system packages sdcadm's lab and tests use, when run as root and
# they are missing; otherwise say exactly what is missing and how to get it.
# Idempotent: does nothing when everything is there.
set -u

# command -> Debian package
declare -A NEED=(
  [sshd]=openssh-server
  [ssh-keygen]=openssh-client
  [rsync]=rsync
  [etcd]=etcd-server   # the HA DC store's backend (tests start a real one)
  [etcdctl]=etcd-client  # `store recover` restores a snapshot with `etcdctl snapshot restore`
)
# zfs-fuse needs root to be useful (FUSE mounts of pools): only then is it wanted.
[ "$(id -u)" -eq 0 ] && NEED[zfs-fuse]=zfs-fuse
# Partitions of a netns lab (root only) are nftables rules on the lab's bridge.
[ "$(id -u)" -eq 0 ] && NEED[nft]=nftables

missing=()
for cmd in "${!NEED[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${NEED[$cmd]}")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing $pkgs" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null \
    || { echo "system-deps: apt-get install $pkgs failed" >&2; exit 1; }
  exit 0
fi
echo "system-deps: missing packages: $pkgs" >&2
echo "system-deps: install them as root (apt-get install $pkgs); tests that need them will be skipped" >&2
exit 0
