#!/usr/bin/env bash
# One script for a fresh machine with Python 3.11:
#   ./run.sh serve [glassbox serve flags]   set up, then start the app on the shipped models
#   ./run.sh test  [pytest args]            set up (Debian's chromium and redis-server too), then run every test
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$(command -v python3.11 || command -v python3)" -m venv .venv
  fi
  # torch first and pinned: the CPU build on this disk; an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[test,photos]"  # photos: scikit-image's bundled sample photos in the ViT gallery
}

need_debian() {  # need_debian COMMAND PACKAGE WHY: install Debian's PACKAGE when COMMAND is missing
  command -v "$1" >/dev/null && return
  echo "installing Debian's $2 for $3" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$2" >/dev/null
}

cmd="${1:-}"
shift || true
case "$cmd" in
  serve) setup; exec .venv/bin/glassbox serve "$@" ;;
  test) setup; need_debian chromium chromium "the browser tests"; need_debian redis-server redis-server "the many-process tests"; exec .venv/bin/python -m pytest -p no:cacheprovider "$@" ;;
  *) echo "usage: ./run.sh serve|test [args]" >&2; exit 2 ;;
esac
