#!/bin/bash
# Smoke test of the real-OpenZFS VM; runs inside the guest:
#
#   dir=$(mktemp -d); cp scripts/openzfs-vm/smoke.sh "$dir"/
#   sudo scripts/openzfs-vm/run "$dir" /host/smoke.sh
#
# File-backed pool, dataset, snapshot, full and incremental send | recv,
# encrypted dataset (passphrase, low pbkdf2iters: key derivation is slow under
# emulation), raw send -w and receive, a bookmark and a raw incremental from
# it, load-key on the received copy, mount -t zfs ds@snap, .zfs/snapshot, a
# clone. Exits non-zero at the first failure.
set -euo pipefail

pool=smoke$$
work=$(mktemp -d /var/tmp/smoke.XXXXXX)
pass='correct horse battery staple'
mnt=/mnt/smoke-snap

step() { printf '\n== [%3ss] %s\n' "$SECONDS" "$*"; }
fail() {
    echo "smoke: FAILED: $*" >&2
    exit 1
}
trap 'echo "smoke: FAILED (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
cleanup() {
    umount "$mnt" 2>/dev/null || true
    zpool destroy -f "$pool" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

same() { # same FILE FILE
    cmp -s "$1" "$2" || fail "$1 and $2 differ"
    echo "same content: $1 = $2"
}
prop() { zfs get -H -o value "$1" "$2"; }

step "zfs version"
zfs version

step "file-backed pool $pool"
truncate -s 512M "$work/vdev"
zpool create -f -O mountpoint="/$pool" -O compression=lz4 "$pool" "$work/vdev"
zpool status "$pool"

step "dataset, file, snapshot"
zfs create "$pool/src"
head -c 4M /dev/urandom >"/$pool/src/data"
echo "first version" >"/$pool/src/note"
zfs snapshot "$pool/src@s1"

step "send | recv (full)"
# readonly: reading the copy (atime) would otherwise modify it and block the incremental
zfs send "$pool/src@s1" | zfs recv -o readonly=on "$pool/copy"
same "/$pool/src/data" "/$pool/copy/data"
same "/$pool/src/note" "/$pool/copy/note"

step "send -i | recv (incremental)"
echo "second version" >"/$pool/src/note"
zfs snapshot "$pool/src@s2"
zfs send -i @s1 "$pool/src@s2" | zfs recv "$pool/copy"
same "/$pool/src/note" "/$pool/copy/note"
[ "$(zfs list -H -t snapshot -o name -r "$pool/copy" | wc -l)" = 2 ] || fail "copy should have 2 snapshots"

step "encrypted dataset (keyformat=passphrase, pbkdf2iters=100000)"
printf '%s\n' "$pass" | zfs create -o encryption=on -o keyformat=passphrase \
    -o pbkdf2iters=100000 -o keylocation=prompt "$pool/enc"
[ "$(prop encryption "$pool/enc")" = aes-256-gcm ] || fail "encryption is $(prop encryption "$pool/enc")"
head -c 2M /dev/urandom >"/$pool/enc/secret"
zfs snapshot "$pool/enc@e1"

step "raw send -w | recv"
zfs send -w "$pool/enc@e1" | zfs recv "$pool/enccopy"
[ "$(prop keystatus "$pool/enccopy")" = unavailable ] || fail "the raw copy's key should be unloaded"
[ "$(prop encryptionroot "$pool/enccopy")" = "$pool/enccopy" ] || fail "wrong encryptionroot"

step "bookmark, then raw incremental from it"
zfs bookmark "$pool/enc@e1" "$pool/enc#b1"
zfs list -H -t bookmark -o name "$pool/enc#b1"
head -c 1M /dev/urandom >"/$pool/enc/more"
zfs snapshot "$pool/enc@e2"
zfs destroy "$pool/enc@e1"
zfs send -w -i "$pool/enc#b1" "$pool/enc@e2" | zfs recv "$pool/enccopy"
[ "$(prop keystatus "$pool/enccopy")" = unavailable ] || fail "the raw copy's key should still be unloaded"

step "load-key on the raw copy, compare"
printf '%s\n' "$pass" | zfs load-key "$pool/enccopy"
zfs mount "$pool/enccopy"
same "/$pool/enc/secret" "/$pool/enccopy/secret"
same "/$pool/enc/more" "/$pool/enccopy/more"

step "mount -t zfs $pool/src@s1 $mnt"
mkdir -p "$mnt"
mount -t zfs "$pool/src@s1" "$mnt"
grep -qx "first version" "$mnt/note" || fail "the snapshot shows the wrong note"
same "/$pool/src/data" "$mnt/data"
umount "$mnt"

step "ls .zfs/snapshot"
ls "/$pool/src/.zfs/snapshot"
# shellcheck disable=SC2012
[ "$(ls "/$pool/src/.zfs/snapshot" | tr '\n' ' ')" = "s1 s2 " ] || fail ".zfs/snapshot should list s1 s2"
grep -qx "first version" "/$pool/src/.zfs/snapshot/s1/note" || fail ".zfs/snapshot/s1 shows the wrong note"

step "clone"
zfs clone "$pool/src@s1" "$pool/clone"
grep -qx "first version" "/$pool/clone/note" || fail "the clone shows the wrong note"

step "pool health"
zpool scrub -w "$pool"
zpool status -x "$pool" | grep -q 'is healthy' || { zpool status -v "$pool"; fail "pool not healthy"; }
zfs list -t all -r "$pool"

step "zfs version"
zfs version
echo
echo "smoke: all checks passed in ${SECONDS}s"
