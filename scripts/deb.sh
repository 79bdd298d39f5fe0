#!/usr/bin/env bash
# `make deb`: a Debian package of what `make` built (library, command, man pages, header,
# completions, contrib/), staged with scripts/install.sh and built with dpkg-deb. Builds no
# code. Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
out=target/deb
root=$out/root
rm -rf "$root"
mkdir -p "$root/DEBIAN"
PREFIX=/usr DESTDIR=$root ZSHDIR=/usr/share/zsh/vendor-completions GZIP_MAN=1 \
  bash scripts/install.sh install >&2
# The newest glibc symbol version either binary needs.
glibc=$(objdump -T target/release/libstallguard.so target/release/stallguard \
  | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: stallguard
Version: $version
Architecture: $arch
Maintainer: stallguard maintainers <stallguard@localhost>
Installed-Size: $size
Depends: libc6 (>= $glibc)
Section: net
Priority: optional
Homepage: https://github.com/stallguard/stallguard
Description: deadlines for servers that have none, without rebuilding them
 libstallguard.so is preloaded (LD_PRELOAD) into an unmodified thread-per-connection or
 prefork server; it watches every accepted TCP connection and shuts down the ones that
 stall (silent clients, slowloris, clients that never read), logging one line each.
 .
 The stallguard command runs a server under the library after checking the policy,
 tells whether a binary can be guarded, and shows, reaps and exports (Prometheus) the
 connections of guarded processes. Examples (systemd drop-in, EnvironmentFile,
 Prometheus alert rules, Grafana dashboard) are in /usr/share/stallguard/contrib.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum > DEBIAN/md5sums)
deb=$out/stallguard_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
