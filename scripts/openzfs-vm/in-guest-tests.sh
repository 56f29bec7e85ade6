#!/usr/bin/env bash
# Runs inside the OpenZFS guest (started by scripts/openzfs-vm/test):
#   in-guest-tests.sh REPO FAKE_BIN_DIR SKIP ONLY TEST_PROGRAM...
# SKIP is a space-separated list of test names not to run; ONLY, if not
# empty, a space-separated list of the only test names to run.
# The share (/host) is this checkout; it is mounted again at REPO, its path
# on the host, so the paths compiled into the test programs resolve. Every
# program runs, even after a failure; the exit status is 1 if any failed.
set -uo pipefail

repo=$1
fake_bins=$2
skip=$3
only=$4
shift 4

mkdir -p "$repo"
mount --bind /host "$repo" || { echo "cannot mount the share at $repo" >&2; exit 1; }
cd "$repo"

# Real-ZFS tests fail instead of skipping when a tool is missing (CI=true);
# the OpenZFS-only ones fail unless zfs is OpenZFS anyway. Pools and
# scratch files go to the guest's own disk: /tmp is a small tmpfs, and the
# 9p share is slow for bulk writes.
export CI=true TMPDIR=/var/tmp
export ZFS2CLOUD_FAKE_BIN_DIR=$fake_bins RUST_BACKTRACE=1
echo "== guest: $(zfs version | head -1), $(uname -r), $(rclone version | head -1), $(gpg --version | head -1)"

failed=()
summary=()
for exe in "$@"; do
    program=$(basename "$exe")
    program=${program%-*}
    # A program that cannot list its tests (or lists none) is a failure,
    # not an empty pass.
    if ! listing=$("$exe" --list --include-ignored) ||
        ! mapfile -t names < <(sed -n 's/: test$//p' <<<"$listing") || [ ${#names[@]} -eq 0 ]; then
        echo "== guest: $program: cannot list its tests"
        summary+=("FAILED        $program (no tests listed)")
        failed+=("$program")
        continue
    fi
    echo "== guest: $program: ${#names[@]} tests"
    for name in "${names[@]}"; do
        if [[ " $skip " == *" $name "* ]]; then
            summary+=("skipped       $program::$name")
            continue
        fi
        if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then
            continue
        fi
        start=$SECONDS
        # --include-ignored: the OpenZFS-only tests are ignored on the host.
        if "$exe" --exact "$name" --include-ignored --test-threads=1 --quiet; then
            summary+=("ok     $(printf '%4d' $((SECONDS - start))) s  $program::$name")
        else
            summary+=("FAILED $(printf '%4d' $((SECONDS - start))) s  $program::$name")
            failed+=("$program::$name")
        fi
    done
done
echo "== guest: results ($(zfs version | head -1))"
printf '  %s\n' "${summary[@]}"
echo "== guest: ${#failed[@]} failed${failed:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
