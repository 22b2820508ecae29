#!/usr/bin/env bash
# Builds the Debian package from a staged tree with dpkg-deb (nothing to install beyond dpkg-dev):
#   scripts/package.sh            → target/debian/shimnet_<version>_<arch>.deb (release build)
#   PROFILE=debug scripts/package.sh   (the tests: reuses the debug build)
#   PKG_VERSION=0.1.0+t1 PKG_OUT=target/debian-t1 scripts/package.sh
#                                 (the upgrade test: the same build as another version, elsewhere)
#   PKG_COMPRESS=none scripts/package.sh   (dpkg-deb -Z; default xz. Throwaway test packages)
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
case $profile in
  release) cargo build --release --locked -p shimnet -p shimnet-cni --bins; bin=target/release ;;
  debug) cargo build --locked -p shimnet -p shimnet-cni --bins; bin=target/debug ;;
  *) echo "package: PROFILE must be release or debug, not $profile" >&2; exit 1 ;;
esac
version=${PKG_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
arch=$(dpkg --print-architecture)
out=${PKG_OUT:-target/debian}
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

inst() { install -D -m "$1" "$2" "$stage/$3"; }
for b in shimnetd shimnetctl; do inst 0755 "$bin/$b" "usr/bin/$b"; done
inst 0755 "$bin/shimnet" usr/lib/cni/shimnet
mkdir -p "$stage/opt/cni/bin"
ln -s /usr/lib/cni/shimnet "$stage/opt/cni/bin/shimnet"
strip --strip-unneeded "$stage/usr/bin/shimnetd" "$stage/usr/bin/shimnetctl" "$stage/usr/lib/cni/shimnet"
inst 0644 packaging/shimnetd.toml etc/shimnet/shimnetd.toml
for u in shimnetd.service shimnetd.socket; do inst 0644 "packaging/systemd/$u" "lib/systemd/system/$u"; done
doc=usr/share/doc/shimnet
for c in packaging/cni/*.conflist; do inst 0644 "$c" "$doc/examples/$(basename "$c")"; done
inst 0644 README.md "$doc/README.md"
gzip -9n "$stage/$doc/README.md"
printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: shimnet\n\nFiles: *\nCopyright: 2026 shimnet developers\nLicense: Apache-2.0\n On Debian systems the full text of the Apache License 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n' > "$stage/$doc/copyright"
printf 'shimnet (%s) unstable; urgency=medium\n\n  * Package built from the shimnet source tree.\n\n -- shimnet developers <shimnet-dev@example.org>  %s\n' \
  "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
  | gzip -9n > "$stage/$doc/changelog.gz"
inst 0644 packaging/debian/lintian-overrides usr/share/lintian/overrides/shimnet

# Man pages and completions, generated from the binaries' clap definitions.
gen=$out/gen
rm -rf "$gen"
"$bin/shimnetd" --generate-docs "$gen/shimnetd"
"$bin/shimnetctl" generate-docs "$gen/shimnetctl"
for t in shimnetd shimnetctl; do
  for m in "$gen/$t"/man8/*.8; do
    inst 0644 "$m" "usr/share/man/man8/$(basename "$m")"
    gzip -9n "$stage/usr/share/man/man8/$(basename "$m")"
  done
  inst 0644 "$gen/$t/bash/$t" "usr/share/bash-completion/completions/$t"
  inst 0644 "$gen/$t/zsh/_$t" "usr/share/zsh/vendor-completions/_$t"
  inst 0644 "$gen/$t/fish/$t.fish" "usr/share/fish/vendor_completions.d/$t.fish"
done

for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$stage/DEBIAN/$s"; done
echo /etc/shimnet/shimnetd.toml > "$stage/DEBIAN/conffiles"

# Shared-library dependencies as dpkg-shlibdeps computes them (it wants a debian/control).
shl=$out/shlibdeps
rm -rf "$shl" && mkdir -p "$shl/debian"
printf 'Source: shimnet\n\nPackage: shimnet\nArchitecture: any\n' > "$shl/debian/control"
abs=$(realpath "$stage")
depends=$(cd "$shl" && dpkg-shlibdeps -O "$abs/usr/bin/shimnetd" "$abs/usr/bin/shimnetctl" "$abs/usr/lib/cni/shimnet" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
[[ -n $depends ]] || { echo "package: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
  packaging/debian/control.in > "$stage/DEBIAN/control"
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"

deb=$out/shimnet_${version}_${arch}.deb
dpkg-deb --root-owner-group "-Z${PKG_COMPRESS:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb"
