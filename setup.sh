#!/usr/bin/env bash
# Sets up this checkout: the system audio tools (when this user may install them) and a virtual environment, .venv,
# with every dependency. `make test` and `make demo` run it on first use and again only when a requirements file or
# this script changes; run it by hand to repair an environment.
set -euo pipefail
cd "$(dirname "$0")"

# System packages, by what needs them: only the tests and M4A/AAC input do, so without root or sudo the set-up warns
# and goes on, and the tests that need a missing tool are skipped with that reason.
declare -A needed_for=(
  [espeak-ng]="speech made at test time (multilingual clips, listening tests)"
  [sox]="tests/data/make_clips.sh"
  [libsox-fmt-mp3]="sox's MP3 format, for tests/data/make_clips.sh"
  [ffmpeg]="reading M4A/AAC audio, and its test"
  [chromium]="the listening page's browser test"
)
missing=()
for package in "${!needed_for[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=""
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo"
  else
    sudo="none"
  fi
  if [ "$sudo" = "none" ] || ! { $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }; }; then
    echo "WARNING: could not install these system packages (no root, no sudo, or no apt); what needs them:" >&2
    for package in "${missing[@]}"; do echo "  $package: ${needed_for[$package]}" >&2; done
    echo "The training, inference and reward code does not; tests that do are skipped with the reason." >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
# The original XCodec2 checkpoint's package pins an old torch; its code runs on ours, so skip its pins.
.venv/bin/python -m pip install -q -r requirements-xcodec2.txt
.venv/bin/python -m pip install -q --no-deps xcodec2==0.1.5
touch .venv/.installed
echo "Ready: .venv (source .venv/bin/activate to use its python, accelerate and pytest)"
