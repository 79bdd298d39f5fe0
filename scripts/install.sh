#!/usr/bin/env bash
# What `make install`, `make uninstall` and `make deb` put where: one list, so the three agree.
# Installing copies what `make` built and builds nothing (so `sudo make install` never leaves
# root-owned files in target/); binaries are stripped on the way.
#   scripts/install.sh install|uninstall|list
# Environment: PREFIX (/usr/local), DESTDIR (empty), MANDIR ($PREFIX/share/man),
# ZSHDIR ($PREFIX/share/zsh/site-functions), GZIP_MAN (1: gzip the man pages, as Debian does).
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?usage: scripts/install.sh install|uninstall|list}
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
MANDIR=${MANDIR:-$PREFIX/share/man}
ZSHDIR=${ZSHDIR:-$PREFIX/share/zsh/site-functions}
GZIP_MAN=${GZIP_MAN:-0}
SHARE=$PREFIX/share/stallguard
DOC=$PREFIX/share/doc/stallguard

# source  destination  mode  how (strip, man or copy)
manifest() {
  echo "target/release/stallguard $PREFIX/bin/stallguard 0755 strip"
  echo "target/release/libstallguard.so $PREFIX/lib/libstallguard.so 0644 strip"
  echo "include/stallguard.h $PREFIX/include/stallguard.h 0644 copy"
  echo "man/stallguard.1 $MANDIR/man1/stallguard.1 0644 man"
  echo "man/libstallguard.so.8 $MANDIR/man8/libstallguard.so.8 0644 man"
  echo "target/completions/stallguard.bash $PREFIX/share/bash-completion/completions/stallguard 0644 copy"
  echo "target/completions/_stallguard $ZSHDIR/_stallguard 0644 copy"
  echo "target/completions/stallguard.fish $PREFIX/share/fish/vendor_completions.d/stallguard.fish 0644 copy"
  echo "LICENSE $DOC/LICENSE 0644 copy"
  echo "CHANGELOG.md $DOC/CHANGELOG.md 0644 copy"
  echo "README.md $DOC/README.md 0644 copy"
  find contrib -type f | LC_ALL=C sort | while read -r f; do
    echo "$f $SHARE/$f 0644 copy"
  done
}

installed_name() { # destination how
  if [ "$2" = man ] && [ "$GZIP_MAN" = 1 ]; then echo "$1.gz"; else echo "$1"; fi
}

case $action in
  list)
    manifest | while read -r _ dst _ how; do installed_name "$dst" "$how"; done
    ;;
  install)
    missing=0
    while read -r src _ _ _; do
      if [ ! -f "$src" ]; then echo "install: $src is missing: run \`make\` first (install builds nothing)" >&2; missing=1; fi
    done < <(manifest)
    [ $missing = 0 ] || exit 1
    manifest | while read -r src dst mode how; do
      install -d "$DESTDIR$(dirname "$dst")"
      case $how in
        strip) install -m "$mode" -s "$src" "$DESTDIR$dst" ;;
        man)
          install -m "$mode" "$src" "$DESTDIR$dst"
          if [ "$GZIP_MAN" = 1 ]; then gzip -9nf "$DESTDIR$dst"; fi
          ;;
        *) install -m "$mode" "$src" "$DESTDIR$dst" ;;
      esac
    done
    ;;
  uninstall)
    manifest | while read -r _ dst _ how; do
      rm -f "$DESTDIR$(installed_name "$dst" "$how")"
    done
    # The directories only this package uses, if now empty.
    if [ -d "$DESTDIR$SHARE" ]; then find "$DESTDIR$SHARE" -depth -type d -empty -delete; fi
    rmdir "$DESTDIR$DOC" 2>/dev/null || true
    ;;
  *) echo "usage: scripts/install.sh install|uninstall|list" >&2; exit 2 ;;
esac
