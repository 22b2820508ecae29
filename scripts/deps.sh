#!/usr/bin/env bash
# Installs the Debian packages shimnet needs to build, run and be tested. Idempotent.
# Usage: scripts/deps.sh [run|test]
set -euo pipefail
what=${1:-run}
# protobuf-compiler: etcd-client (the etcd membership source) compiles etcd's protos.
run_pkgs=(iproute2 nftables libnftables-dev iptables pkg-config protobuf-compiler)
test_pkgs=(iputils-ping tcpdump busybox-static procps podman containernetworking-plugins conmon runc uidmap tar docker.io netavark systemd curl dpkg-dev lintian iperf3 gnuplot-nox dnsmasq-base dnsutils ethtool)
# systemd as PID 1 in a container (tests/systemd_pid1.rs)
test_pkgs+=(debootstrap systemd-container)
# containerd and the Go CNI libraries (tests/go_clients.rs)
test_pkgs+=(containerd golang-go golang-github-containerd-go-cni-dev golang-github-appc-cni-dev)
# a real etcd cluster, etcdctl and test certificates (tests/etcd.rs, benches/membership.rs)
test_pkgs+=(etcd-server etcd-client openssl)
pkgs=("${run_pkgs[@]}")
[[ $what == test ]] && pkgs+=("${test_pkgs[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Never let a package start its service (dockerd, containerd) in the host's namespace: the
  # tests start their own instances inside test namespaces.
  guard=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  trap 'if [[ -n $guard ]]; then rm -f "$guard"; fi' EXIT
  apt-get install -y -q "${missing[@]}"
fi
# cargo-fuzz for the short fuzz pass of scripts/test.sh (scripts/fuzz.sh).
if [[ $what == test ]] && ! command -v cargo-fuzz >/dev/null; then
  echo "deps: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
