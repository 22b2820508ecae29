#!/usr/bin/env bash
# Assembles the Docker managed plugin bundle: DIR/config.json and DIR/rootfs (shimnetd, the
# shared libraries it links, its config). Then, offline:
#   docker plugin create shimnet DIR && docker plugin enable shimnet
#   docker network create -d shimnet --ipam-driver shimnet --subnet 10.230.0.0/24 web
# Usage: scripts/docker-plugin.sh [DIR]  (default target/docker-plugin; PROFILE=debug reuses the
# debug build). Prints DIR on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
case $profile in
  release) cargo build --release --locked -p shimnet --bin shimnetd; bin=target/release/shimnetd ;;
  debug) cargo build --locked -p shimnet --bin shimnetd; bin=target/debug/shimnetd ;;
  *) echo "docker-plugin: PROFILE must be release or debug, not $profile" >&2; exit 1 ;;
esac
dir=${1:-target/docker-plugin}
rm -rf "$dir"
root=$dir/rootfs
mkdir -p "$root"/{usr/bin,etc/shimnet,var/lib/shimnet,run/docker/plugins,run/shimnet,host/proc,tmp}
install -m 0755 "$bin" "$root/usr/bin/shimnetd"
strip --strip-unneeded "$root/usr/bin/shimnetd"
# Every shared library ldd resolves, and the dynamic loader, at the same paths.
ldd "$bin" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u | while read -r lib; do
  install -D -m 0755 "$(realpath "$lib")" "$root$lib"
done
# libnftables resolves protocol and service names.
install -m 0644 /etc/protocols /etc/services "$root/etc/"
install -m 0644 packaging/docker-plugin/shimnetd.toml "$root/etc/shimnet/shimnetd.toml"
install -m 0644 packaging/docker-plugin/config.json "$dir/config.json"
echo "$dir"
