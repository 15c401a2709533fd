#!/usr/bin/env bash
# Makes the short speech clips the tests read, with their transcripts in metadata.csv.
#
#   bash tests/data/make_clips.sh
#
# Needs espeak-ng and sox. Two voices (en-us, a male voice; en+f3, a female one), one sentence spoken
# by both. Most clips are 16 kHz mono 16-bit WAV, the codec's own format; one is 22.05 kHz stereo FLAC
# and one is 22.05 kHz MP3, so that loading has to resample, downmix and decode compressed audio.
set -euo pipefail

cd "$(dirname "$0")"
tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT

# file name | espeak-ng voice | sox output options | transcript
clips=(
  "fox_en_us.wav|en-us|-r 16000 -c 1 -b 16|The quick brown fox jumps over the lazy dog."
  "fox_en_f3.wav|en+f3|-r 16000 -c 1 -b 16|The quick brown fox jumps over the lazy dog."
  "rainbow_en_us.wav|en-us|-r 16000 -c 1 -b 16|A rainbow appeared after the summer rain."
  "shells_en_f3.wav|en+f3|-r 16000 -c 1 -b 16|She sells sea shells by the sea shore."
  "stella_en_us.flac|en-us|-r 22050 -c 2 -b 16|Please call Stella and ask her to come."
  "birch_en_f3.mp3|en+f3|-r 22050 -c 1|The birch canoe slid on the smooth planks."
)

echo "file_name,text" > metadata.csv
for clip in "${clips[@]}"; do
  IFS="|" read -r file_name voice sox_options text <<< "$clip"
  espeak-ng -v "$voice" -w "$tmp_dir/raw.wav" "$text"
  # Trim espeak-ng's leading and trailing silence (quieter than -50 dB), then convert;
  # -D turns dithering off, so that reruns give the same files.
  # shellcheck disable=SC2086
  sox -D "$tmp_dir/raw.wav" $sox_options "$file_name" silence 1 0.02 -50d reverse silence 1 0.02 -50d reverse
  echo "$file_name,$text" >> metadata.csv
done
ls -l -- *.wav *.flac *.mp3 metadata.csv
