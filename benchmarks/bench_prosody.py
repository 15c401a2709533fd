"""Does a prosody reward order natural speech above its prosody failures? Real espeak-ng speech in several voices and
languages, each clip altered in known ways (llasa.alterations: monotone, random pitch jitter, exaggerated pitch,
1.5x faster, 0.65x slower, 5 dB SNR white noise, a 2.5 s silent tail, a 2 s pause, noisy monotone), scored by a
reward config with Whisper base (multilingual, CTranslate2, from PyPI) both with the reference recording and from
the text alone; plus the pitch estimators' cost and agreement.

    python -m benchmarks.bench_prosody                                   # reward_models/prosody_reward.json
    python -m benchmarks.bench_prosody --reward_config my.json --timing_clips 16

"Natural" is the recording through the WORLD vocoder unchanged, as every pitch and timing failure is (so the
vocoder's colour does not decide); the reference is the recording itself. From the text alone, the expected
duration comes from each language's speaking rate and the intonation's natural ranges from the movement and
roughness of other sentences in the same voices (a dataset's own recordings, as a user would measure them).
"""

import json
import multiprocessing
import subprocess
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llasa import alterations
from llasa.audio import SAMPLE_RATE, load_audio, write_wav
from llasa.cli import ScriptParser
from llasa.prosody import IntonationScorer, pitch_contours, pyin_contour
from llasa.rewards.components import Gate
from llasa.rewards.intelligibility import counted_error
from llasa.scores import estimate_speaking_rate
from tests.multilingual import build_whisper_base

# (voice, language, test sentences, calibration sentences): the calibration ones stand for the rest of a dataset.
VOICES = (
    ("en-us", "en",
     ("A rainbow appeared after the summer rain.", "Please call Stella and ask her to come.",
      "We will meet at the station at eight tonight."),
     ("The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.")),
    ("en+f3", "en",
     ("She sells sea shells by the sea shore.", "The box was thrown beside the parked truck.",
      "My brother bought a new bicycle last week."),
     ("It is easy to tell the depth of a well.", "Rice is often served in round bowls.")),
    ("en-gb-x-rp", "en",
     ("The juice of lemons makes fine punch.", "Four hours of steady work faced us.",
      "The boy was there when the sun rose."),
     ("These days a chicken leg is a rare dish.", "A rod is used to catch pink salmon.")),
    ("de", "de",
     ("Der Zug kommt heute etwas später an.", "Wir gehen morgen früh in den Wald.",
      "Ich trinke jeden Morgen eine Tasse Kaffee."),
     ("Das Wetter ist heute sehr schön.", "Meine Schwester wohnt in einer kleinen Stadt.")),
    ("es", "es",
     ("Hoy hace muy buen tiempo en Madrid.", "Los niños juegan en el parque.",
      "Me gusta leer un libro por la noche."),
     ("El tren llega a la estación a las ocho.", "Vamos a comer con mis padres el domingo.")),
)  # fmt: skip
FAILURES = ("monotone", "jitter", "exaggerated", "fast", "slow", "noise", "silent_tail", "long_pause")


def speak(text: str, voice: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    wav = load_audio(path, SAMPLE_RATE)
    voiced = np.flatnonzero(np.abs(wav) > 0.01)  # espeak's own leading and trailing silence trimmed
    return wav[max(voiced[0] - 800, 0) : voiced[-1] + 800]


def make_corpus(folder: Path) -> tuple[list[dict], list[dict]]:
    """Test rows (each with its natural clip, reference and failures) and calibration rows (text, voice, clip)."""
    rows, calibration = [], []
    for voice, language, sentences, others in VOICES:
        for i, text in enumerate(sentences):
            recording = speak(text, voice, folder / f"{voice}_{i}.wav")
            reference = folder / f"{voice}_{i}_reference.wav"
            write_wav(reference, recording, SAMPLE_RATE)
            clips = {"natural": alterations.vocoded(recording)}
            clips.update((name, alterations.FAILURES[name](recording)) for name in FAILURES)
            clips["noisy_monotone"] = alterations.noisy(clips["monotone"])
            rows.append(
                {"voice": voice, "language": language, "text": text, "reference": str(reference), "clips": clips}
            )
        for i, text in enumerate(others):
            calibration.append(
                {"language": language, "text": text, "clip": speak(text, voice, folder / f"{voice}_c{i}.wav")}
            )
    return rows, calibration


def natural_ranges(calibration: list[dict]) -> tuple[dict, dict]:
    """Speaking rate per language and intonation ranges, measured on the calibration recordings."""
    rates = defaultdict(lambda: ([], []))
    for row in calibration:
        rates[row["language"]][0].append(row["text"])
        rates[row["language"]][1].append(row["clip"].size / SAMPLE_RATE)
    chars_per_second = {lang: estimate_speaking_rate(*pairs).chars_per_second for lang, pairs in rates.items()}
    measures = IntonationScorer(device="cpu").measures([row["clip"] for row in calibration])
    movements = [m.movement for m in measures]
    roughness = [m.roughness for m in measures]
    intonation = {
        "natural_movement": [round(float(min(movements)), 2), round(float(max(movements)), 2)],
        "max_roughness": round(float(max(roughness)) * 1.5, 2),
    }
    return chars_per_second, intonation


def score_rows(config: dict, rows: list[dict], whisper: Path, with_reference: bool, rates: dict, intonation: dict):
    """Each row's clips' ClipScores by name, one reward (one language) at a time."""
    from llasa.rewards import load_reward

    scored = [{} for _ in rows]
    for language in dict.fromkeys(row["language"] for row in rows):
        values = json.loads(json.dumps(config))
        components = values["components"]
        if not with_reference:
            components.get("duration", {})["chars_per_second"] = rates[language]
            components.get("intonation", {}).update(intonation)
        reward = load_reward(
            values, asr_backend="faster-whisper", asr_model=str(whisper), language=language, device="cpu"
        )
        picked = [i for i, row in enumerate(rows) if row["language"] == language]
        names = [name for name in rows[picked[0]]["clips"]]
        audio = [rows[i]["clips"][name] for i in picked for name in names]
        texts = [rows[i]["text"] for i in picked for name in names]
        columns = {}
        if with_reference:
            columns = {"reference_audio": [rows[i]["reference"] for i in picked for name in names]}
        clips = iter(reward.score_audio(audio, texts, columns))
        for i in picked:
            scored[i] = {name: next(clips) for name in names}
    return scored


def orderings(scored: list[dict], value, kept=lambda clip: True) -> dict[str, tuple[int, int]]:
    """Per failure, (pairs where natural scores strictly higher, pairs), over the pairs whose natural clip is `kept`:
    monotone is also compared with noisy monotone."""
    results = {}
    for failure in (*FAILURES, "noisy_monotone"):
        better = "monotone" if failure == "noisy_monotone" else "natural"
        pairs = [clips for clips in scored if kept(clips[better])]
        wins = sum(value(clips[better]) > value(clips[failure]) for clips in pairs)
        results[f"{better} > {failure}"] = (wins, len(pairs))
    return results


def heard_within(threshold: float):
    """Whether Whisper heard a clip within the gate: its counted ERR (beyond the reference's) at most `threshold`."""

    def heard(clip) -> bool:
        error = counted_error(clip.metrics)
        return error is not None and error <= threshold

    return heard


def total(results: dict[str, tuple[int, int]]) -> str:
    wins, n = np.sum(list(results.values()), axis=0)
    return f"{wins}/{n} ({wins / n:.0%})"


def silence_rewards(config: dict, whisper: Path, rates: dict, intonation: dict) -> dict[str, float | None]:
    """The reward of 2 s of digital silence and of 2 s of faint white noise (-60 dBFS) for the text "You."."""
    rng = np.random.default_rng(0)
    clips = {
        "silence": np.zeros(2 * SAMPLE_RATE, np.float32),
        "faint_noise": rng.normal(0, 1e-3, 2 * SAMPLE_RATE).astype(np.float32),
    }
    row = {"language": "en", "text": "You.", "reference": None, "clips": clips}
    return {
        name: clip.reward for name, clip in score_rows(config, [row], whisper, False, rates, intonation)[0].items()
    }


def timing(n_clips: int, rows: list[dict], crepe: tuple[str, ...]) -> list[str]:
    """Seconds to measure the pitch of n_clips clips of 5 s on the CPU: pYIN in 4 spawned worker processes (how the
    removed `pitch` term ran it), pYIN in this process and each CREPE model; and CREPE's agreement with pYIN on the
    natural clips."""
    natural = [row["clips"]["natural"] for row in rows]
    clips = [np.resize(natural[i % len(natural)], 5 * SAMPLE_RATE) for i in range(n_clips)]
    processes = ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn"))
    list(processes.map(pyin_contour, clips[:4]))  # workers started and warm, as in a long run
    for estimator in crepe:
        pitch_contours(clips[:1], estimator)  # weights loaded before timing
    runs = [("pYIN, 4 worker processes (the removed pitch term)", lambda: list(processes.map(pyin_contour, clips)))]
    runs += [("pYIN contour, this process", lambda: pitch_contours(clips, "pyin"))]
    runs += [(estimator, lambda e=estimator: pitch_contours(clips, e)) for estimator in crepe]
    lines = [f"| pitch estimator | seconds for {n_clips} x 5 s |", "|---|---|"]
    for name, measure in runs:
        start = time.perf_counter()
        measure()
        lines.append(f"| {name} | {time.perf_counter() - start:.2f} |")
    processes.shutdown()
    pyin = pitch_contours(natural, "pyin")
    for estimator in crepe:
        gaps, voicing = [], []
        for a, b in zip(pitch_contours(natural, estimator), pyin, strict=True):
            n = min(a.f0.size, b.f0.size)
            both = a.voiced[:n] & b.voiced[:n]
            gaps.append(np.abs(12 * np.log2(a.f0[:n][both] / b.f0[:n][both])))
            voicing.append(np.mean(a.voiced[:n] == b.voiced[:n]))
        gap = np.concatenate(gaps)
        lines.append(
            f"\n{estimator} against pYIN on the {len(natural)} natural clips: F0 within 1 semitone on "
            f"{np.mean(gap < 1):.1%} of the frames both call voiced (median gap {np.median(gap):.2f} st); voicing "
            f"agrees on {np.mean(voicing):.1%} of frames"
        )
    return lines


@dataclass(frozen=True)
class Arguments:
    reward_config: str = field(default="reward_models/prosody_reward.json", metadata={"help": "The reward config."})
    timing_clips: int = field(default=16, metadata={"help": "Clips of 5 s for the pitch timing (0: skip)."})
    crepe_full: bool = field(default=False, metadata={"help": "Also time CREPE full (minutes on a CPU)."})


def main(argv=None):
    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)
    config = json.loads(Path(args.reward_config).read_text())
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "whisper").mkdir()
        whisper = build_whisper_base(folder / "whisper")
        rows, calibration = make_corpus(folder)
        rates, intonation = natural_ranges(calibration)
        print(f"From the calibration sentences: chars_per_second {json.dumps(rates)}, intonation {intonation}\n")
        table = [
            "| pair | with reference | from text alone | intonation, ref | intonation, text |",
            "|---|---|---|---|---|",
        ]
        results, heard = {}, {}
        threshold = Gate(**config.get("gate", {})).threshold
        for with_reference in (True, False):
            scored = score_rows(config, rows, whisper, with_reference, rates, intonation)
            errors = [counted_error(clips["natural"].metrics) for clips in scored]
            print(f"reference {with_reference}: natural clips' counted WER {[round(e, 2) for e in errors]}")
            results[with_reference] = (
                orderings(scored, lambda clip: clip.reward),
                orderings(scored, lambda clip: clip.components.get("intonation") or 0.0),
            )
            heard[with_reference] = orderings(scored, lambda clip: clip.reward, heard_within(threshold))
        columns = [results[w][k] for k in (0, 1) for w in (True, False)]
        for pair in results[True][0]:
            table.append(f"| {pair} | " + " | ".join(f"{wins}/{n}" for wins, n in (c[pair] for c in columns)) + " |")
        table.append("| all | " + " | ".join(total(column) for column in columns) + " |")
        print(f"{len(rows)} clips ({len(VOICES)} voices, {len({r['language'] for r in rows})} languages), "
              f"{args.reward_config}, Whisper base\n")  # fmt: skip
        print("\n".join(table))
        print(
            f"\nReward, over the pairs whose better clip Whisper base hears within the gate (counted WER <= "
            f"{threshold}): with reference {total(heard[True])}, from text alone {total(heard[False])}"
        )
        print("\nSilence scored against 'You.':", silence_rewards(config, whisper, rates, intonation))
        if args.timing_clips:
            crepe = ("crepe-tiny", "crepe-full") if args.crepe_full else ("crepe-tiny",)
            print("\n" + "\n".join(timing(args.timing_clips, rows, crepe)))


if __name__ == "__main__":
    main()
