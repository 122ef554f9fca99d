#!/usr/bin/env bash
# Builds the Debian package target/deb/appliance_VERSION_ARCH.deb with dpkg-deb (and
# dpkg-shlibdeps for its Depends): both binaries, a default configuration in
# /etc/appliance/, a hardened systemd unit, a logrotate file and the README.
#
#   bash tools/package.sh              release build (what to install on an appliance)
#   bash tools/package.sh --debug      from the debug build (the tests use this: no
#                                      release build in CI)
#
# Install: dpkg -i target/deb/appliance_*.deb; apt-get -f install  (for its Depends)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[ "${1:-}" = "--debug" ] && profile=debug
if [ "$profile" = release ]; then
    cargo build --release -q -p appliance -p cli --bins
else
    cargo build -q -p appliance -p cli --bins
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' appliance/Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name="appliance_${version}_${arch}"
stage="target/deb/$name"
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/etc/appliance" "$stage/etc/logrotate.d" \
    "$stage/lib/systemd/system" "$stage/usr/share/doc/appliance"
install -m 0755 "target/$profile/appliance" "target/$profile/appliancectl" "$stage/usr/bin/"
if [ "$profile" = release ]; then
    strip "$stage/usr/bin/appliance" "$stage/usr/bin/appliancectl"
fi
install -m 0640 packaging/appliance.toml "$stage/etc/appliance/appliance.toml"
install -m 0644 packaging/logrotate "$stage/etc/logrotate.d/appliance"
install -m 0644 packaging/appliance.service "$stage/lib/systemd/system/appliance.service"
install -m 0644 README.md "$stage/usr/share/doc/appliance/README.md"
# Man pages and shell completions, generated from the binaries' own clap definitions.
install -d "$stage/usr/share/man/man8" "$stage/usr/share/man/man1" \
    "$stage/usr/share/bash-completion/completions"
"target/$profile/appliance" --man "$stage/usr/share/man/man8"
"target/$profile/appliancectl" man "$stage/usr/share/man/man1"
gzip -9n "$stage"/usr/share/man/man*/*
"target/$profile/appliance" --completions bash > "$stage/usr/share/bash-completion/completions/appliance"
"target/$profile/appliancectl" completions bash > "$stage/usr/share/bash-completion/completions/appliancectl"
install -m 0644 examples/*.toml "$stage/usr/share/doc/appliance/"
printf 'appliance: TLS offload appliance\nLicense: Apache-2.0\n' > "$stage/usr/share/doc/appliance/copyright"

# Depends from the libraries the binaries link (libc, libssl, DPDK's librte-*).
shlibs=$(mktemp -d)
mkdir -p "$shlibs/debian"
printf 'Source: appliance\n\nPackage: appliance\nArchitecture: any\n' > "$shlibs/debian/control"
depends=$(cd "$shlibs" && dpkg-shlibdeps -O -e "$OLDPWD/$stage/usr/bin/appliance" -e "$OLDPWD/$stage/usr/bin/appliancectl" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shlibs"
size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: appliance
Version: $version
Architecture: $arch
Maintainer: appliance maintainers <appliance@localhost>
Installed-Size: $size
Depends: ${depends}, dpdk
Section: net
Priority: optional
Description: TLS offload appliance on a DPDK data plane
 Terminates TLS 1.2/1.3 on pinned poll-mode cores (DPDK, smoltcp, OpenSSL's
 libcrypto), proxies to backends, shares sessions across a cluster, and relays
 SOCKS5 over TLS. appliance is the daemon, appliancectl its control tool.
CONTROL
printf '/etc/appliance/appliance.toml\n/etc/logrotate.d/appliance\n' > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # Not enabled or started: the default configuration names a port to edit first.
fi
exit 0
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl stop appliance.service 2>/dev/null || true
fi
exit 0
PRERM
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
# A debug package is for the tests: not worth xz's minute on unstripped binaries.
compress=()
[ "$profile" = debug ] && compress=(-Znone)
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "target/deb/$name.deb" >/dev/null
echo "target/deb/$name.deb"
