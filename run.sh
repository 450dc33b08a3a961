#!/usr/bin/env bash
# One entry point for a fresh machine: `bash run.sh app` or `bash run.sh test`.
# Creates .venv on first use, installs (or checks) the requirements, then runs the app or the tests.
set -euo pipefail
cd "$(dirname "$0")"
what="${1:-}"
shift || true
case "$what" in
  app) requirements=requirements.txt ;;
  test) requirements=requirements-dev.txt ;;
  *) echo "usage: bash run.sh app|test [extra args]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
.venv/bin/python -m pip install --quiet -r "$requirements"
if [ "$what" = test ] && ! command -v chromium >/dev/null 2>&1; then
  # The browser tests drive Debian's Chromium (never a downloaded browser); without it they skip.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed and cannot be installed without root: browser tests will skip" >&2
  fi
fi
if [ "$what" = app ]; then
  exec .venv/bin/python app.py "$@"
fi
exec .venv/bin/python -m pytest "$@"
