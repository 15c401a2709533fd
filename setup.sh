#!/usr/bin/env bash
# Sets up a new machine: system audio tools and a virtual environment with every dependency.
#   bash setup.sh && source .venv/bin/activate
set -euo pipefail
cd "$(dirname "$0")"

# espeak-ng and sox (with its MP3 format) make the real speech the tests and the demo use; ffmpeg decodes the
# audio formats libsndfile cannot (M4A, AAC); chromium runs the listening page's browser test (Playwright).
packages="espeak-ng sox libsox-fmt-mp3 ffmpeg chromium"
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null || ! command -v ffmpeg >/dev/null \
  || ! command -v chromium >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -qq $packages || { $sudo apt-get update -qq && $sudo apt-get install -y -qq $packages; }
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
# The original XCodec2 checkpoint's package pins an old torch; its code runs on ours, so skip its pins.
.venv/bin/python -m pip install -q -r requirements-xcodec2.txt
.venv/bin/python -m pip install -q --no-deps xcodec2==0.1.5
echo "Ready: source .venv/bin/activate"
