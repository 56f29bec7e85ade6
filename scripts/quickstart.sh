#!/usr/bin/env bash
# See zfs2cloud work, start to finish, with no ZFS pool and no cloud account:
#
#   sudo bash scripts/quickstart.sh
#
# It installs gnupg and rclone (Debian packages) and, unless the machine
# already has OpenZFS (which it then uses), zfs-fuse; builds zfs2cloud,
# creates a throwaway file-backed pool and a local rclone remote under a
# temp dir, runs `zfs2cloud backup` on three simulated days, shows
# what is on the remote (`status --remote`, `verify`), restores the latest
# backup into a second throwaway pool with `zfs2cloud restore`, compares the
# files with the source, prints the result, and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps --no-moto --any-zfs
echo "== building zfs2cloud"
cargo build --locked --quiet -p zfs2cloud-cli
z2c="${CARGO_TARGET_DIR:-$PWD/target}/debug/zfs2cloud"

work=$(mktemp -d /tmp/zfs2cloud-quickstart.XXXXXX)
pool="z2cquick$$"
pool2="z2cquick$$r"
destroy_pool() {
    # zfs-fuse reports a pool busy for a moment after a receive: retry.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        zpool list "$1" >/dev/null 2>&1 || return 0
        zpool destroy -f "$1" 2>/dev/null && return 0
        sleep 1
    done
    echo "quickstart: could not destroy pool $1" >&2
}
cleanup() {
    destroy_pool "$pool2"
    zfs list -H -t snapshot -o name -r "$pool" 2>/dev/null | while read -r s; do
        zfs release zfs2cloud "$s" 2>/dev/null || true
    done
    destroy_pool "$pool"
    gpgconf --homedir "$work/gnupg" --kill gpg-agent 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== a throwaway pool $pool and a local rclone remote under $work"
truncate -s 512M "$work/pool.img"
zpool create -m "$work/mnt" "$pool" "$work/pool.img"
zfs create "$pool/data"
data="$work/mnt/data"
mkdir -p "$work/remote"
install -d -m 700 "$work/gnupg"
export GNUPGHOME="$work/gnupg"
(umask 077
 printf '[cloud]\ntype = local\n' > "$work/rclone.conf"
 echo "quickstart passphrase $(date +%s%N)" > "$work/passphrase")

cat > "$work/zfs2cloud.toml" <<TOML
dataset = "$pool/data"
intermediate_basedir = "$work/intermediate"
remote = "cloud:$work/remote/data"
rclone_config = "$work/rclone.conf"
passphrase_file = "$work/passphrase"
split_size = "256K"
full_every_x_days = 30
oldest_snapshot_days = 45

[hooks]
# Stand-ins for "systemctl stop app" / "systemctl start app".
pre_snapshot = ["/bin/sh", "-c", "echo '   (pre_snapshot: the application would stop here)'"]
post_snapshot = ["/bin/sh", "-c", "echo '   (post_snapshot: the application would start again)'"]
TOML
"$z2c" -c "$work/zfs2cloud.toml" check-config >/dev/null

for day in 01 02 03; do
    echo "== day $day: some files change, then: zfs2cloud backup"
    mkdir -p "$data/docs"
    echo "notes of 2024-01-$day" > "$data/docs/notes-$day.txt"
    head -c 600000 /dev/urandom > "$data/photo-$day.jpg"
    ZFS2CLOUD_NOW="2024-01-${day}T03:00:00Z" "$z2c" -c "$work/zfs2cloud.toml" backup
done

echo "== what is on the remote (a full and two incrementals, both based on the full)"
(cd "$work/remote/data" && find . -type f | sort | sed 's/^/   /')
for d in "$work"/remote/data/*/; do
    (cd "$d" && sha256sum -c --quiet SHA256SUMS) && echo "   $(basename "$d"): SHA256SUMS ok"
done

echo "== zfs2cloud status --remote"
"$z2c" -c "$work/zfs2cloud.toml" status --remote | sed 's/^/   /'

echo "== zfs2cloud verify (sizes and sha256s on the remote against the manifests)"
"$z2c" -c "$work/zfs2cloud.toml" verify | sed 's/^/   /'

echo "== restore the latest backup into a second throwaway pool $pool2"
truncate -s 512M "$work/pool2.img"
zpool create -m "$work/mnt2" "$pool2" "$work/pool2.img"
"$z2c" -c "$work/zfs2cloud.toml" restore --to "$pool2/data" --at latest | sed 's/^/   /'
if diff -r "$data" "$(zfs get -H -o value mountpoint "$pool2/data")"; then
    echo "== RESULT: the restored files are identical to the source. Cleaning up."
else
    echo "== RESULT: the restored files DIFFER from the source" >&2
    exit 1
fi
