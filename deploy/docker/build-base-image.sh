#!/usr/bin/env bash
# build-base-image.sh - build a local stand-in for python:3.11-slim-bookworm.
#
# Docker Hub is unreachable here, so the base image is made from Debian
# packages instead: debootstrap (minbase) of bookworm with Debian's Python
# 3.11, upgraded from the machine's configured bookworm suites (updates,
# security), trimmed, and imported as the tag the Dockerfile expects. The
# image carries a LABEL and /etc/propensity-base-image saying it is a stand-in.
# On a host that can pull, skip this and pin the real image by digest.
#
# Env: BASE_TAG (default python:3.11-slim-bookworm), FORCE=1 to rebuild an
# existing tag, MIRROR to override the Debian mirror read from apt's sources.
set -euo pipefail

TAG=${BASE_TAG:-python:3.11-slim-bookworm}
SUITE=bookworm
PACKAGES=python3.11,python3-venv,ca-certificates

size() { docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%s: %.1f MB\n", "'"$TAG"'", $1/1e6}'; }

if docker image inspect "$TAG" >/dev/null 2>&1 && [[ ${FORCE:-0} != 1 ]]; then
  echo "build-base-image: $TAG exists (FORCE=1 rebuilds)"; size; exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# The URI that apt's sources (one-line *.list or deb822 *.sources) use for
# Debian suite $1 with component main: the machine's configured mirror.
mirror_for() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$1" '
      function main_in(from, i) { for (i = from; i <= NF; i++) if ($i == "main") return 1; return 0 }
      function flush() { if (uri != "" && hit && comp) { print uri; exit } uri = ""; hit = comp = 0 }
      /^[[:space:]]*#/ { next }
      /^deb[[:space:]]/ { sub(/\[[^]]*\]/, ""); if ($3 == suite && main_in(4)) { print $2; exit } next }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/ { deb = / deb( |$)/ }
      /^URIs:/ { uri = deb ? $2 : "" }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
      /^Components:/ { comp = main_in(2) }
      END { flush() }' "$f"
  done | head -n 1
}
MIRROR=${MIRROR:-$(mirror_for "$SUITE")}
[[ -n $MIRROR ]] || { echo "build-base-image: no $SUITE mirror in /etc/apt/sources*; set MIRROR" >&2; exit 1; }
echo "build-base-image: debootstrap $SUITE from $MIRROR"

WORK=$(mktemp -d /var/tmp/propensity-base.XXXXXX)
ROOT=$WORK/rootfs
cleanup() { mountpoint -q "$ROOT/proc" && umount "$ROOT/proc"; rm -rf "$WORK"; }
trap cleanup EXIT

debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }

# Point-release and security updates, from the mirrors the machine uses.
{
  for suite in "$SUITE" "$SUITE-updates" "$SUITE-security"; do
    if [[ $suite == "$SUITE" ]]; then uri=$MIRROR; else uri=$(mirror_for "$suite"); fi
    if [[ -n $uri ]]; then
      printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n\n' \
        "$uri" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg
    fi
  done
} >"$ROOT/etc/apt/sources.list.d/debian.sources"
rm -f "$ROOT/etc/apt/sources.list"
mount -t proc proc "$ROOT/proc"
{ chroot "$ROOT" apt-get update -q &&
  chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get -y -q upgrade &&
  chroot "$ROOT" apt-get clean; } >"$WORK/upgrade.log" 2>&1 || { tail -n 30 "$WORK/upgrade.log" >&2; exit 1; }
umount "$ROOT/proc"

# Trim like the official slim images, and keep later apt installs trimmed.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/var/cache/debconf/*-old \
  "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
  "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/lintian "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/*
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
ln -sf python3 "$ROOT/usr/bin/python"
PYVER=$(chroot "$ROOT" python3 -c 'import platform; print(platform.python_version())')
printf 'STAND-IN for %s: debootstrap %s (minbase) from %s, Debian python %s, built %s\n' \
  "$TAG" "$SUITE" "$MIRROR" "$PYVER" "$(date -u +%FT%TZ)" >"$ROOT/etc/propensity-base-image"

tar --numeric-owner -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "ENV PYTHON_VERSION=$PYVER" \
  --change 'LABEL org.propensity.base-image.stand-in="true"' \
  --change "LABEL org.opencontainers.image.description=\"stand-in for $TAG built from Debian $SUITE packages; see /etc/propensity-base-image\"" \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
echo "build-base-image: built $TAG (python $PYVER)"; size
