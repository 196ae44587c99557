#!/usr/bin/env bash
# Installs what cryptoflow still needs on a Debian machine, and nothing that is already there:
#   system packages: a Java 17+ JDK (its javac builds cryptoflow/core/jvm), Maven, PostgreSQL
#                    server binaries (only when missing), plus, with --test, the packages
#                    listed in .ci/apt-packages.txt;
#   uv (from PyPI, when missing) and the locked Python dependencies (uv sync --frozen).
#   with --test, the tests' S3 server: SeaweedFS's `weed`, built with Go (the Go module proxy)
#                    once per machine into the tool cache (cryptoflow/core/tools.py).
# It never downloads a Python interpreter: uv uses the machine's Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf 'bootstrap: %s\n' "$*"; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ] 2>/dev/null \
  || ! command -v javac >/dev/null; then
  missing+=(openjdk-17-jdk-headless)
fi
command -v mvn >/dev/null || missing+=(maven)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ "$want_test" -eq 1 ] && [ -f .ci/apt-packages.txt ]; then
  while read -r pkg; do
    pkg="${pkg%%#*}"; pkg="$(echo "$pkg" | xargs)"
    [ -z "$pkg" ] && continue
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done < .ci/apt-packages.txt
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "system packages present"
fi

if command -v uv >/dev/null; then
  UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
  UV=(python3 -m uv)
else
  say "installing uv from PyPI"
  python3 -m pip install --quiet uv
  UV=(python3 -m uv)
fi
say "python dependencies (uv sync --frozen)"
"${UV[@]}" sync --frozen --quiet

if [ "$want_test" -eq 1 ]; then
  # Go's official tarball installs into /usr/local/go, often not on PATH.
  if [ -x /usr/local/go/bin/go ]; then export PATH="$PATH:/usr/local/go/bin"; fi
  say "seaweedfs for the object-storage tests (built once, minutes; then cached)"
  "${UV[@]}" run --frozen python -m cryptoflow.core.tools
fi
