#!/usr/bin/env bash
# Put promtool (to check the agents' /metrics) into the virtualenv, taken from
# Debian's prometheus package without installing it: installing would start a
# Prometheus server, and we only want its checker. Idempotent; on failure the
# metrics-format test is skipped with the reason.
set -u
venv=${1:-.venv}
command -v promtool >/dev/null 2>&1 && exit 0
[ -x "$venv/bin/promtool" ] && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "get-promtool: no apt-get; the promtool test will be skipped" >&2; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 0
if ! apt-get download prometheus >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] && apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1
fi
deb=$(ls prometheus_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "get-promtool: could not download Debian's prometheus package; the promtool test will be skipped" >&2; exit 0; }
dpkg -x "$deb" x && cp x/usr/bin/promtool "$OLDPWD/$venv/bin/promtool" && echo "get-promtool: promtool installed into $venv/bin" >&2
exit 0
