"""Real speech whose listener preference is known by construction, for the listening tests and the preference
benchmark: espeak-ng clips in one folder per kind (varied or monotone intonation, clean or noisy), and judgments
that follow the construction."""

import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE, load_audio, write_wav
from llasa.listening.store import PreferenceStore

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A rainbow appeared after the summer rain.",
    "She sells sea shells by the sea shore.",
    "Please call Stella and ask her to come.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
)
VOICES = ("en-us", "en+f3", "en+m3", "en-gb")


def speak(text: str, voice: str = "en-us", pitch_range: str = "medium", speed: int = 175) -> np.ndarray:
    """espeak-ng's speech of `text` at 16 kHz; pitch_range is SSML's prosody range ("0" is a monotone)."""
    ssml = f'<speak><prosody range="{pitch_range}">{text}</prosody></speak>'
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-m", "-v", voice, "-s", str(speed), "-w", str(path), ssml], check=True)
        return load_audio(path, SAMPLE_RATE)


def add_noise(wav: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at `snr_db` below the speech's power."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, np.sqrt(np.mean(wav**2) / 10 ** (snr_db / 10)), wav.shape)
    return np.clip(wav + noise, -1, 1).astype(np.float32)


# The four kinds of clip: (varied intonation, clean); a listener prefers varied to flat and clean to noisy.
KINDS = {
    "varied_clean": (True, True),
    "flat_clean": (False, True),
    "varied_noisy": (True, False),
    "flat_noisy": (False, False),
}


def make_kind_folders(root: Path, n_texts: int, seed: int = 0) -> dict[str, Path]:
    """One folder per kind, each holding <id>.wav for the first n_texts sentences, and a metadata.csv of texts.
    Voices and noise levels (5-15 dB SNR) vary from text to text."""
    rng = np.random.default_rng(seed)
    folders = {kind: root / kind for kind in KINDS}
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "metadata.csv").write_text(
            "file_name,text\n" + "".join(f"s{i:02d}.wav,{SENTENCES[i]}\n" for i in range(n_texts)), encoding="utf-8"
        )
    for i in range(n_texts):
        voice = VOICES[i % len(VOICES)]
        speech = {varied: speak(SENTENCES[i], voice, "x-high" if varied else "0") for varied in (True, False)}
        snr = float(rng.uniform(5, 15))
        for kind, (varied, clean) in KINDS.items():
            wav = speech[varied] if clean else add_noise(speech[varied], snr, seed=1000 * seed + i)
            write_wav(folders[kind] / f"s{i:02d}.wav", wav, SAMPLE_RATE)
    return folders


def construction_winner(system_a: str, system_b: str) -> str | None:
    """The kind a listener prefers by construction (more of varied and clean), None when neither has more."""
    merit = {kind: sum(KINDS[kind]) for kind in KINDS}
    if merit[system_a] == merit[system_b]:
        return None
    return system_a if merit[system_a] > merit[system_b] else system_b


def judge_by_construction(store: PreferenceStore, rater: str = "ai:construction", seed: int = 0) -> int:
    """Judge every registered pair of two kinds as constructed, shown in a random order, as machine judgments;
    pairs of equal merit (varied but noisy against monotone but clean) are left out. Returns how many were judged."""
    rng = random.Random(seed)
    judged = 0
    for pair in store.pairs():
        winner = construction_winner(pair["system_a"], pair["system_b"])
        if winner is None:
            continue
        shown = [pair["clip_a"], pair["clip_b"]]
        rng.shuffle(shown)
        winner_clip = pair["clip_a"] if winner == pair["system_a"] else pair["clip_b"]
        judged += store.record(rater, pair["pair_id"], *shown, "a" if shown[0] == winner_clip else "b", kind="machine")
    return judged
