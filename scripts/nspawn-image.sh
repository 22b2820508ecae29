#!/usr/bin/env bash
# The root file system the systemd-as-PID-1 test (tests/systemd_pid1.rs) boots with
# systemd-nspawn: Debian bookworm, minbase + systemd, built with debootstrap once and cached.
# Prints the path of the cached root on its last line. Never change that tree: boot an overlay
# or a copy of it. Run as root.
#
#   SHIMNET_IMAGE_CACHE  cache folder (default /var/cache/shimnet-test)
#   SHIMNET_IMAGE_MIRROR Debian mirror (default: the one apt uses for bookworm on this machine)
#
# The cache key covers the suite, the package list, the mirror and the recipe version below:
# change any of them and a new root is built (roots of other keys are then deleted).
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "nspawn-image: run as root" >&2; exit 1; }
suite=bookworm
include=systemd,systemd-sysv,dbus,iproute2,nftables,iptables,libnftables1
# Bump when the steps after debootstrap change.
recipe=1
cache=${SHIMNET_IMAGE_CACHE:-/var/cache/shimnet-test}

# The first enabled "deb" source of apt's configuration that carries $suite itself (not
# -updates/-security), deb822 (.sources) or one-line (.list) style.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$suite" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " ") && uri != "") {
          print uri; found = 1; exit
        }
        types = ""; suites = ""; uri = ""; enabled = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, /[ \t]+/); uri = u[1] }
      /^Enabled:/ { sub(/^Enabled:[ \t]*/, ""); enabled = $0 }
      END { if (!found) flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -e 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
  done
}
mirror=${SHIMNET_IMAGE_MIRROR:-$(apt_mirror | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}

key=$(printf '%s\n' "$suite" "$include" "$mirror" "$recipe" | sha256sum | cut -c1-16)
root=$cache/root-$key
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [[ ! -e $root/.complete ]]; then
  echo "nspawn-image: building $suite ($include) from $mirror into $root" >&2
  start=$SECONDS
  tmp=$cache/build-$key
  rm -rf "$tmp" "$root"
  # One retry: a mirror hiccup should not fail a test run.
  for try in 1 2; do
    if debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      break
    fi
    tail -30 "$cache/debootstrap.log" >&2
    echo "nspawn-image: debootstrap failed (try $try; log: $cache/debootstrap.log)" >&2
    rm -rf "$tmp"
    [[ $try == 1 ]] || exit 1
  done
  # Quiet, deterministic boots: no timers that would run apt, fstrim or e2scrub during a test.
  for t in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$t"
  done
  rm -f "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/cache/apt/*.bin
  touch "$tmp/.complete"
  mv "$tmp" "$root"
  echo "nspawn-image: built in $((SECONDS - start)) s" >&2
  # Roots of older keys.
  for old in "$cache"/root-*; do
    [[ $old == "$root" ]] || rm -rf "$old"
  done
fi
echo "$root"
