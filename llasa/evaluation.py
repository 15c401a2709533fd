"""Evaluation: synthesise a test list with several systems, score every clip as the reward does, summarise
(tables, plots); plot a GRPO run's training curves and show where its step time went."""

import gc
import json
import logging
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from llasa.asr import WHISPER_SAMPLE_RATE
from llasa.audio import count_identical, identical_clips_note, load_audio
from llasa.format import CODEC_SAMPLE_RATE, VOICE_AUDIO_COLUMN
from llasa.outputs import check_replaceable, claim, write_text
from llasa.scores import (
    DEFAULT_WAVLM_MODEL,
    DNSMOS_METRICS,
    DnsmosScorer,
    PitchVariationScorer,
    SpeakerSimilarityScorer,
    text_length,
)
from llasa.synthesis import Request, output_paths, read_input_file
from llasa.text import CER_LANGUAGES

logger = logging.getLogger(__name__)

# The llasa.scores measures compare can add, by the name of the reward component that scores them.
SPEECH_SCORES = ("speaker_similarity", "quality", "pitch")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")  # an --audio_dir clip is <id> with one of these, .wav first
SCORE_CHUNK = 64  # clips held in memory at once while scoring
# Summary metrics in display order; others the reward logs (its components' raw measures) follow.
METRIC_ORDER = (
    "wer",
    "cer",
    "nll",
    "reward",
    "duration_s",
    "chars_per_second",
    "speaker_cosine",
    *(f"dnsmos_{name}" for name in DNSMOS_METRICS),
    "pitch_semitones",
)
TRAINING_STATE = "trainer_state.json"
EMA_WEIGHT = 0.9  # curve smoothing, as TensorBoard's slider: 0 = raw, closer to 1 = smoother
# TRL's own log keys that curves plots, after the reward and the reward functions' means and metrics.
TRAINING_KEYS = ("kl", "completions/mean_length")


@dataclass(frozen=True)
class System:
    """A system to score: a model to synthesise with, or a folder of <id>.wav it already produced."""

    name: str
    audio_dir: Path
    model: str | None = None  # checkpoint to synthesise with; None for an --audio_dir
    requests: tuple[Request, ...] | None = None  # its own lines (resynthesis: the recordings' texts); None: the list's
    recordings: dict[str, str] | None = None  # resynthesis: id -> the recording the codec encodes and decodes


# ---------------------------------------------------------------------------------------------------------------------
# Synthesis


# Written into audio/<system>/ once its synthesis finished: a rerun with the same settings reuses its clips.
SYNTHESIS_MARKER = "synthesis.json"


def synthesis_settings(system: System, requests: list[Request], options, args) -> dict:
    """What a system's clips depend on: the model, the codec, the sampling settings and the texts."""
    from dataclasses import asdict

    model = Path(system.model).expanduser()
    return {
        "model": str(model.resolve()) if model.exists() else system.model,
        "codec_id": str(args.codec_id),
        "dtype": str(args.dtype),
        "batch_size": args.batch_size,
        "sampling": asdict(options),
        "requests": [[r.id, r.text, r.prompt_wav, r.prompt_text] for r in requests],
    }


def _finished(system: System, settings: dict) -> bool:
    marker = system.audio_dir / SYNTHESIS_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == settings
    except (OSError, ValueError):
        return False


def synthesize_models(systems: Sequence[System], requests: list[Request], options, args) -> None:
    """Speak the test list with each model system into its audio_dir, one model in memory at a time.

    A system whose synthesis finished earlier with the same settings (its SYNTHESIS_MARKER) is kept, not redone."""
    import torch

    from llasa.clip_codes import codes_path
    from llasa.codec import load_codec
    from llasa.synthesis import load_model, run

    settings = {system.name: synthesis_settings(system, requests, options, args) for system in systems if system.model}
    models = [system for system in systems if system.model is not None]
    for system in models:
        if _finished(system, settings[system.name]):
            logger.info("Keeping %s's clips: synthesised earlier with the same settings.", system.name)
    models = [system for system in models if not _finished(system, settings[system.name])]
    if not models:
        return
    # Voice prompts are encoded; without them the codec only decodes, and loads without its encoders.
    codec = load_codec(args.codec_id, device=args.device, decode_only=not any(r.prompt_wav for r in requests))
    for system in models:
        logger.info("Synthesising with %s (%s).", system.name, system.model)
        # Clips left from an earlier run would be scored as this run's where this run skips a line.
        (system.audio_dir / SYNTHESIS_MARKER).unlink(missing_ok=True)
        for request in requests:
            (system.audio_dir / f"{request.id}.wav").unlink(missing_ok=True)
            codes_path(system.audio_dir / f"{request.id}.wav").unlink(missing_ok=True)
        llasa = load_model(system.model, args.device, args.dtype)
        # Every model restarts from the same seed, so differences come from the weights.
        run(llasa, codec, requests, system.audio_dir, options, batch_size=args.batch_size)
        claim([system.audio_dir / SYNTHESIS_MARKER], "--output_dir")
        write_text(system.audio_dir / SYNTHESIS_MARKER, json.dumps(settings[system.name], indent=2) + "\n")
        del llasa
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------------
# Scoring


def find_audio(audio_dir: Path, clip_id: str) -> Path | None:
    """<audio_dir>/<clip_id>.wav, else the same stem with another audio suffix; None if there is none."""
    for suffix in AUDIO_SUFFIXES:
        path = audio_dir / f"{clip_id}{suffix}"
        if path.is_file():
            return path
    return None


def _load_or_none(path) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return load_audio(path, CODEC_SAMPLE_RATE)
    except RuntimeError as e:
        logger.warning("%s", e)
        return None


def score_system(
    system: System,
    requests: list[Request],
    reward,
    speech_scores: Sequence[str] = (),
    device: str = "auto",
    speaker: dict | None = None,
) -> list[dict]:
    """One record per request: the reward module's scores of <audio_dir>/<id>.wav plus duration, speaking rate and
    the chosen speech_scores.py measures. A clip that is missing or unreadable gets status "missing"."""
    from tqdm.auto import tqdm

    records = []
    for start in tqdm(range(0, len(requests), SCORE_CHUNK), desc=f"Scoring {system.name}", unit="chunk"):
        chunk = requests[start : start + SCORE_CHUNK]
        paths = [find_audio(system.audio_dir, request.id) for request in chunk]
        audio = [_load_or_none(path) for path in paths]
        present = [i for i, wav in enumerate(audio) if wav is not None]
        # The reward hears audio at Whisper's rate; the clips were loaded at the codec's (both 16 kHz).
        # The voice prompt is what the reward's speaker similarity compares with.
        voices = {VOICE_AUDIO_COLUMN: [chunk[i].prompt_wav for i in present]}
        clips = reward.score_audio(
            [_at_rate(audio[i], WHISPER_SAMPLE_RATE) for i in present], [chunk[i].text for i in present], voices
        )
        extra = _speech_scores(
            [audio[i] for i in present], [chunk[i] for i in present], speech_scores, device, speaker or {}
        )
        scored = {i: (clip, measures) for i, clip, measures in zip(present, clips, extra, strict=True)}
        for i, request in enumerate(chunk):
            record = {"system": system.name, "id": request.id, "text": request.text, "audio": _str(paths[i])}
            if i not in scored:
                records.append({**record, "status": "missing"})
                continue
            clip, measures = scored[i]
            duration = len(audio[i]) / CODEC_SAMPLE_RATE
            records.append(
                {
                    **record,
                    "status": clip.status,
                    "reward": clip.reward,
                    **clip.metrics,
                    "duration_s": duration,
                    "chars_per_second": _speaking_rate(request.text, duration),
                    **measures,
                    "transcript": clip.transcript,
                }
            )
    return records


def _at_rate(wav: np.ndarray, rate: int) -> np.ndarray:
    from llasa.audio import resample

    return resample(wav, CODEC_SAMPLE_RATE, rate)


def _str(path) -> str | None:
    return None if path is None else str(path)


def _speaking_rate(text: str, duration: float) -> float | None:
    return text_length(text) / duration if duration > 0 else None


def _speech_scores(
    audio: list[np.ndarray], requests: list[Request], names: Sequence[str], device: str, speaker: dict
) -> list[dict]:
    """The speech_scores.py measures of each clip: raw values, not the rewards' [0, 1] mappings. `speaker`: options
    of the speaker similarity's scorer (backend, model)."""
    measures = [{} for _ in audio]
    if not audio:
        return measures
    if "speaker_similarity" in names:
        # Only voice-cloning lines have a voice to compare with; the others get None.
        references = [_load_or_none(request.prompt_wav) for request in requests]
        cosines = SpeakerSimilarityScorer(device=device, **speaker).similarities(audio, references)
        for row, value in zip(measures, cosines, strict=True):
            row["speaker_cosine"] = value
    if "quality" in names:
        for row, mos in zip(measures, DnsmosScorer(device="auto").mos(audio), strict=True):
            row.update({f"dnsmos_{metric}": None if mos is None else mos[metric] for metric in DNSMOS_METRICS})
    if "pitch" in names:
        for row, spread in zip(measures, PitchVariationScorer().spreads(audio), strict=True):
            row["pitch_semitones"] = spread
    return measures


# ---------------------------------------------------------------------------------------------------------------------
# Summary, table and plot


def metric_names(records: list[dict]) -> list[str]:
    """The numeric metrics present in the records: METRIC_ORDER first, then the reward's other raw measures."""
    numeric = {
        key
        for record in records
        for key, value in record.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return [name for name in METRIC_ORDER if name in numeric] + sorted(numeric - set(METRIC_ORDER))


def _values(records: list[dict], system: str, metric: str) -> list[float]:
    values = (record.get(metric) for record in records if record["system"] == system)
    return [float(value) for value in values if value is not None and math.isfinite(value)]


def summarize(records: list[dict], systems: list[str], baseline: str) -> dict:
    """Per system: clip counts and, per metric, mean, median and their differences from the baseline's."""
    metrics = metric_names(records)
    summary = {"baseline": baseline, "metrics": metrics, "systems": {}}
    for system in systems:
        own = [record for record in records if record["system"] == system]
        entry = {
            "n_clips": len(own),
            "n_scored": sum(record["status"] == "scored" for record in own),
            "n_missing": sum(record["status"] == "missing" for record in own),
            "metrics": {},
        }
        for metric in metrics:
            values = _values(records, system, metric)
            entry["metrics"][metric] = {
                "n": len(values),
                "mean": statistics.fmean(values) if values else None,
                "median": statistics.median(values) if values else None,
            }
        summary["systems"][system] = entry
    for system in systems:
        for metric, stats in summary["systems"][system]["metrics"].items():
            base = summary["systems"][baseline]["metrics"][metric]
            for key in ("mean", "median"):
                both = stats[key] is not None and base[key] is not None
                stats[f"delta_{key}"] = stats[key] - base[key] if both else None
    return summary


def identical_to_baseline(records: list[dict], systems: list[str], baseline: str) -> dict[str, dict]:
    """Per system whose clips include files identical to the baseline's (same id): how many, of how many shared."""
    audio = {(r["system"], r["id"]): r["audio"] for r in records if r["status"] != "missing" and r.get("audio")}
    found = {}
    for system in systems:
        if system == baseline:
            continue
        shared = [
            (path, audio[baseline, i])
            for (name, i), path in audio.items()
            if name == system and (baseline, i) in audio
        ]
        identical = count_identical(shared)
        if identical:
            found[system] = {"identical": identical, "compared": len(shared)}
    return found


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _signed(value) -> str:
    return "" if value is None else f"{value:+.4f}"


def markdown_table(summary: dict, title: str) -> str:
    """The summary as markdown: clip counts per system, then one row per metric and system."""
    baseline = summary["baseline"]
    lines = [
        f"# {title}",
        "",
        "| system | clips | scored | missing |",
        "|---|---|---|---|",
    ]
    for system, entry in summary["systems"].items():
        lines.append(f"| {system} | {entry['n_clips']} | {entry['n_scored']} | {entry['n_missing']} |")
    for system, counts in summary.get("identical_to_baseline", {}).items():
        lines += ["", "> " + identical_clips_note(baseline, system, counts["identical"], counts["compared"])]
    lines += [
        "",
        f"| metric | system | n | mean | median | Δ mean vs {baseline} | Δ median vs {baseline} |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in summary["metrics"]:
        for system, entry in summary["systems"].items():
            stats = entry["metrics"][metric]
            is_base = system == baseline
            cells = [
                metric,
                system,
                str(stats["n"]),
                _cell(stats["mean"]),
                _cell(stats["median"]),
                "" if is_base else _signed(stats["delta_mean"]),
                "" if is_base else _signed(stats["delta_median"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(records: list[dict], systems: list[str], path) -> Path:
    """Box plots with the clips as points: the error rate (WER or CER) and the duration per system."""
    plt = _pyplot()
    error = next((name for name in ("wer", "cer") if any(r.get(name) is not None for r in records)), None)
    panels = [(error, error.upper() if error else None), ("duration_s", "duration (s)")]
    panels = [(metric, label) for metric, label in panels if metric is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    rng = np.random.default_rng(0)  # the points' horizontal jitter
    for axis, (metric, label) in zip(axes[0], panels, strict=True):
        data = [_values(records, system, metric) for system in systems]
        axis.boxplot([values or [np.nan] for values in data], showfliers=False)
        for position, values in enumerate(data, start=1):
            axis.scatter(position + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.5)
        axis.set_xticks(range(1, len(systems) + 1), systems)
        axis.set_ylabel(label)
        axis.set_title(f"{label} per clip")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def check_inputs(args) -> None:
    """Every model, folder and file compare needs, checked before any model loads or any clip is synthesised."""
    from llasa.checks import check_codec, check_input_file, check_llasa_model, check_output_dir
    from llasa.rewards import check_reward_config

    check_input_file(args.test_list, "--test_list")
    check_output_dir(args.output_dir)
    check_output_dir(Path(args.output_dir) / "audio", "--output_dir's audio folder")
    for name, path in args.models or []:
        check_llasa_model(path, f"--models {name}=")
        check_output_dir(Path(args.output_dir) / "audio" / name, f"--models {name}'s audio folder")
    if args.models:
        check_codec(args.codec_id)
    if isinstance(args.reward_config, str | Path):
        check_reward_config(args.reward_config)


REPORT_FILES = ("clips.jsonl", "summary.json", "summary.md", "comparison.png")


def compare_outputs(systems: Sequence[System], requests: list[Request], output_dir: Path) -> list[Path]:
    """Every file compare writes: the reports, and each synthesised system's clips and synthesis record."""
    paths = [output_dir / name for name in REPORT_FILES]
    for system in systems:
        if system.model is not None:
            paths += [*output_paths(requests, system.audio_dir), system.audio_dir / SYNTHESIS_MARKER]
        elif system.recordings is not None:
            paths += [system.audio_dir / f"{clip_id}.wav" for clip_id in system.recordings]
    return paths


def compare(args) -> dict:
    """Synthesise with the models, score every system, write clips.jsonl, summary.json, summary.md and the plot.

    `args` holds `evaluate.py compare`'s flags (test_list, input_format, models, audio_dir, baseline, reward_config,
    speech_scores, output_dir, sampling, codec_id, device, dtype, batch_size).
    """
    from llasa.rewards import codec_of, load_reward

    output_dir = Path(args.output_dir)
    # Synthesis decodes with the codec the reward's scores assume, unless --codec_id names another.
    args.codec_id = codec_of(args.codec_id, None if args.protocol is not None else args.reward_config)
    check_inputs(args)
    requests, skipped = read_input_file(args.test_list, args.input_format)
    for skip in skipped:
        logger.warning("Skipped %s", skip.reason)
    if not requests:
        raise ValueError(f"{args.test_list} holds no usable line.")
    systems = [System(name, output_dir / "audio" / name, model=path) for name, path in args.models or []]
    systems += [System(name, Path(path)) for name, path in args.audio_dir or []]
    if args.resynthesis:
        systems.append(resynthesis_system(args.test_list, requests, output_dir))
    check_replaceable(compare_outputs(systems, requests, output_dir), "--output_dir")
    # The reward config is checked and its models loaded before hours of synthesis, not after.
    reward_config = args.reward_config
    if args.protocol is not None:
        reward_config = protocol_reward_config(args.language, args.codec_id)
    reward = load_reward(reward_config, device=None if args.device == "auto" else args.device)
    reward.load_models(codec=bool(args.models))  # the codec decodes nothing when only audio folders are scored
    synthesize_models(systems, requests, args.sampling, args)
    if args.resynthesis:
        resynthesize(systems[-1], args.codec_id, args.device)
    speaker = protocol_speaker_options(args.sim_model) if args.protocol is not None else {}
    records = [
        record
        for system in systems
        for record in score_system(
            system, list(system.requests or requests), reward, args.speech_scores, args.device, speaker
        )
    ]
    names = [system.name for system in systems]
    summary = summarize(records, names, args.baseline or names[0])
    summary.update(test_list=str(args.test_list), n_texts=len(requests), n_skipped_lines=len(skipped))
    summary["identical_to_baseline"] = identical_to_baseline(records, names, summary["baseline"])
    for system, counts in summary["identical_to_baseline"].items():
        logger.warning(
            "%s", identical_clips_note(summary["baseline"], system, counts["identical"], counts["compared"])
        )
    claim([output_dir / name for name in REPORT_FILES], "--output_dir")
    write_text(
        output_dir / "clips.jsonl", "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    )
    write_text(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    title = f"Evaluation on {Path(args.test_list).name} ({len(requests)} texts)"
    table = markdown_table(summary, title)
    if args.protocol is not None:
        table += "\n" + protocol_table(summary, args.language)
    write_text(output_dir / "summary.md", table)
    plot_comparison(records, names, output_dir / "comparison.png")
    logger.info(
        "Wrote %s", ", ".join(str(output_dir / name) for name in ("clips.jsonl", "summary.json", "summary.md"))
    )
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# Seed-TTS-eval's protocol, and the codec's ceiling (resynthesis)

PROTOCOLS = ("seed-tts-eval",)
# Seed-TTS-eval's ASR: Paraformer-zh (FunASR) for Chinese, Whisper-large-v3 otherwise.
SEED_TTS_EVAL_ASR = {"zh": ("paraformer", "paraformer-zh")}
SEED_TTS_EVAL_WHISPER = ("openai-whisper", "large-v3")
RESYNTHESIS = "resynthesis"  # the system name of the codec's resynthesis of the reference recordings


def protocol_reward_config(language: str, codec_id: str) -> dict:
    """Seed-TTS-eval's recognition as a reward config: its ASR for the language and the error rate only (CER for
    Chinese, WER otherwise), both sides normalised by its own rule ("seed-tts-eval": simplified Chinese, punctuation
    removed, English lower-cased; numbers compared as written)."""
    backend, model = SEED_TTS_EVAL_ASR.get(language, SEED_TTS_EVAL_WHISPER)
    return {
        "asr_backend": backend,
        "asr_model": model,
        "language": language,
        "codec_id": codec_id,
        "components": {"wer": {"weight": 1.0, "normalizer": "seed-tts-eval"}},
    }


def protocol_speaker_options(model: str | None = None) -> dict:
    """SIM as Seed-TTS-eval measures it: the cosine of WavLM speaker-verification embeddings (a WavLMForXVector
    checkpoint; Seed-TTS-eval's own is WavLM-large with an ECAPA-TDNN head, which transformers does not load)."""
    return {"backend": "wavlm", "model": model or DEFAULT_WAVLM_MODEL}


def protocol_table(summary: dict, language: str) -> str:
    """The systems as Seed-TTS-eval's papers tabulate them: mean WER (or CER) in percent, mean SIM."""
    metric = "cer" if language in CER_LANGUAGES else "wer"
    lines = [f"| system | {metric.upper()} (%) | SIM |", "|---|---|---|"]
    for system, entry in summary["systems"].items():
        error = entry["metrics"].get(metric, {}).get("mean")
        similarity = entry["metrics"].get("speaker_cosine", {}).get("mean")
        cells = ["" if error is None else f"{100 * error:.2f}", "" if similarity is None else f"{similarity:.3f}"]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ground_truth_audio(test_list) -> dict[str, str]:
    """id -> the recording of the line's text: the 5th field of a Seed-TTS-eval line (id|prompt_text|prompt_wav|
    text|ground_truth_wav), relative paths taken from the list's folder. Lines without one are absent."""
    path = Path(test_list)
    recordings = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        if len(fields) == 5 and fields[4].strip():
            recordings[fields[0].strip()] = str(path.parent / fields[4].strip())
    return recordings


def resynthesis_system(test_list, requests: list[Request], output_dir: Path) -> System:
    """The codec's ceiling as a system: each line's recording encoded and decoded, scored against its text. The
    recording is the line's ground truth (Seed-TTS-eval's 5th field), else its voice prompt, scored against the
    prompt's transcript (and, for SIM, against the prompt itself). Lines with neither are counted as missing."""
    ground_truth = ground_truth_audio(test_list)
    lines, recordings = [], {}
    for request in requests:
        if request.id in ground_truth:
            lines.append(request)
            recordings[request.id] = ground_truth[request.id]
        elif request.prompt_wav is not None and request.prompt_text:
            lines.append(replace(request, text=request.prompt_text))
            recordings[request.id] = request.prompt_wav
        else:
            lines.append(request)
    if not recordings:
        raise ValueError(
            f"--resynthesis needs recordings: no line of {test_list} has a ground-truth audio (a 5th field) or a "
            "voice prompt with its transcript."
        )
    return System(RESYNTHESIS, output_dir / "audio" / RESYNTHESIS, requests=tuple(lines), recordings=recordings)


def resynthesize(system: System, codec_id: str, device: str) -> None:
    """Encode and decode each recording of the resynthesis system with the codec into <audio_dir>/<id>.wav; an
    unreadable recording is reported and its clip left missing."""
    from llasa.audio import write_wav
    from llasa.codec import load_codec

    codec = load_codec(codec_id, device=device)
    claim([system.audio_dir / f"{clip_id}.wav" for clip_id in system.recordings], "--output_dir")
    items = list(system.recordings.items())
    for start in range(0, len(items), SCORE_CHUNK):
        chunk = items[start : start + SCORE_CHUNK]
        for clip_id, _ in chunk:
            (system.audio_dir / f"{clip_id}.wav").unlink(missing_ok=True)
        audio = [_load_or_none(path) for _, path in chunk]
        present = [i for i, wav in enumerate(audio) if wav is not None and wav.size]
        decoded = codec.decode(codec.encode([audio[i] for i in present])) if present else []
        for i, wav in zip(present, decoded, strict=True):
            write_wav(system.audio_dir / f"{chunk[i][0]}.wav", wav, CODEC_SAMPLE_RATE)
    logger.info("Resynthesised %d recordings with %s into %s.", len(items), codec_id, system.audio_dir)


# ---------------------------------------------------------------------------------------------------------------------
# Training curves


def find_trainer_state(run_dir) -> Path:
    """The run's trainer_state.json: the run folder's own (written at the end), else the latest checkpoint's."""
    run_dir = Path(run_dir)
    if (run_dir / TRAINING_STATE).is_file():
        return run_dir / TRAINING_STATE
    checkpoints = [
        path
        for path in run_dir.glob(f"checkpoint-*/{TRAINING_STATE}")
        if re.fullmatch(r"checkpoint-\d+", path.parent.name)
    ]
    if not checkpoints:
        raise FileNotFoundError(
            f"No {TRAINING_STATE} in {run_dir} or its checkpoint-N folders: is it a training run's --output_dir?"
        )
    return max(checkpoints, key=lambda path: int(path.parent.name.split("-")[1]))


def ema(values: Sequence[float], weight: float = EMA_WEIGHT) -> list[float]:
    """Exponential moving average, debiased at the start (as TensorBoard smooths)."""
    if not 0 <= weight < 1:
        raise ValueError(f"The smoothing weight must be in [0, 1), got {weight}.")
    smoothed, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**count))
    return smoothed


def training_series(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """(steps, values) per plotted key: reward, rewards/<f>/mean, each reward function's own metrics (<f>/...),
    then KL and completion length. Steps where a key is missing or not finite are left out."""
    keys = dict.fromkeys(key for entry in log_history for key in entry)
    functions = [key[len("rewards/") : -len("/mean")] for key in keys if re.fullmatch(r"rewards/.+/mean", key)]
    wanted = ["reward", *(f"rewards/{name}/mean" for name in functions)]
    wanted += [key for name in functions for key in keys if key.startswith(f"{name}/")]
    wanted += TRAINING_KEYS
    series = {}
    for key in dict.fromkeys(wanted):
        points = [
            (entry["step"], float(entry[key]))
            for entry in log_history
            if "step" in entry and isinstance(entry.get(key), int | float) and math.isfinite(entry[key])
        ]
        if points:
            series[key] = ([step for step, _ in points], [value for _, value in points])
    return series


def panel_note(series: dict[str, tuple[list[int], list[float]]], keys: list[str]) -> str | None:
    """Why a panel of these keys shows no curve to read: a single logged step (one point draws no line), or one
    value at every step (a flat line). None when it shows a curve."""
    points = [series[key] for key in keys]
    if all(len(steps) == 1 for steps, _ in points):
        return f"one logged step (step {points[0][0][0]}):\nlogging_steps sets how often TRL logs"
    if len(keys) == 1 and len(set(points[0][1])) == 1:
        return f"{points[0][1][0]:.4g} at every logged step"
    return None


def _plot_series(axis, series: dict, keys: list[str], weight: float) -> None:
    """One panel: each key raw (faint) and smoothed, its points marked when there are few, and why it is empty."""
    for key in keys:
        steps, values = series[key]
        marker = "o" if len(steps) <= 3 else None
        (line,) = axis.plot(steps, ema(values, weight), label=key, marker=marker)
        axis.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=0.8)
    axis.set_title(keys[0] if len(keys) == 1 else "rewards")
    axis.set_xlabel("step")
    if len(keys) > 1:
        axis.legend(fontsize="small")
    note = panel_note(series, keys)
    if note is not None:
        axis.text(0.5, 0.75, note, transform=axis.transAxes, ha="center", va="center", color="dimgray")


def _read_series(run_dir) -> tuple[Path, list[dict], dict]:
    state_path = find_trainer_state(run_dir)
    log_history = json.loads(state_path.read_text(encoding="utf-8")).get("log_history", [])
    series = training_series(log_history)
    if not series:
        raise ValueError(
            f"{state_path} logs none of reward, rewards/<name>/mean, kl, completions/mean_length: no curve to plot."
        )
    return state_path, log_history, series


def _reward_keys(series: dict) -> list[str]:
    return [key for key in series if key == "reward" or key.startswith("rewards/")]


def plot_curves(run_dir, output=None, weight: float = EMA_WEIGHT) -> tuple[Path, list[str]]:
    """A PNG of the run's curves (raw, faint, and smoothed): the rewards together, then one panel per other key."""
    state_path, _, series = _read_series(run_dir)
    rewards = _reward_keys(series)
    panels = ([rewards] if rewards else []) + [[key] for key in series if key not in rewards]
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    plt = _pyplot()
    # Constrained layout leaves room for the figure's title above the panels' own.
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(5 * n_cols, 3.2 * n_rows), squeeze=False, layout="constrained"
    )
    for axis, keys in zip(axes.flat, panels, strict=False):
        _plot_series(axis, series, keys, weight)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(f"{Path(run_dir).name}: {state_path.relative_to(run_dir)} (EMA {weight})")
    output = Path(run_dir) / "training_curves.png" if output is None else Path(output)
    claim([output], "--output")
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output, list(series)


def plot_summary(run_dir, output=None, weight: float = EMA_WEIGHT) -> Path:
    """One PNG of a run: its reward per step beside where its step time went (the profile `profile` prints)."""
    state_path, log_history, series = _read_series(run_dir)
    rewards = _reward_keys(series)
    if not rewards:
        raise ValueError(f"{state_path} logs no reward: nothing to summarise.")
    profile = step_profile(log_history)
    plt = _pyplot()
    figure, (curve, phases) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    _plot_series(curve, series, rewards, weight)
    names = [name for name, _ in profile.rows()]
    seconds = [value for _, value in profile.rows()]
    bars = phases.barh(names, seconds)
    phases.bar_label(bars, labels=[f"{value:.2f} s ({100 * value / profile.step:.0f} %)" for value in seconds])
    phases.invert_yaxis()  # in the order of a step
    phases.set_xlim(0, 1.35 * max(seconds))  # room for the labels
    phases.set_xlabel("seconds per optimizer step")
    phases.set_title(f"{profile.step:.2f} s per step (mean of {profile.steps})")
    figure.suptitle(f"{Path(run_dir).name}: reward and step time")
    output = Path(run_dir) / "summary.png" if output is None else Path(output)
    claim([output], "--output")
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


# ---------------------------------------------------------------------------------------------------------------------
# Where a step's time goes: the profiling timings train.py logs (TRL's `profiling/Time taken: ...`, seconds per
# optimizer step). The step time runs from the start of an optimizer step to its end (logging, saving and sample
# clips come after it).

PROFILE_PREFIX = "profiling/Time taken: "
STEP_TIMING = "step"  # train.py's wall time of an optimizer step: the four phases add up to it
# Suffixes of TRL's profiled names (each is prefixed with the trainer class name).
GENERATION = (".transformers.generate", ".transformers.generate_batch", ".vLLM.generate", ".sync_weights")
REWARD = "._calculate_rewards"
PREPARE = "._prepare_inputs"  # generation + reward + log-probs of the old / reference policy


@dataclass(frozen=True)
class Profile:
    """Mean seconds per optimizer step of each phase."""

    steps: int  # optimizer steps averaged
    step: float
    generation: float
    reward: float
    reference: float  # log-probs of the reference (and old) policy, advantages
    update: float  # loss forward, backward, optimizer step

    def rows(self) -> list[tuple[str, float]]:
        return [
            ("generation", self.generation),
            ("reward (decode + Whisper)", self.reward),
            ("reference log-probs", self.reference),
            ("policy update", self.update),
        ]


def read_log_history(run_dir) -> list[dict]:
    """The log history of a run folder (its trainer_state.json, else its latest checkpoint's)."""
    return json.loads(find_trainer_state(run_dir).read_text())["log_history"]


def _timing(entry: dict, suffixes) -> float:
    suffixes = (suffixes,) if isinstance(suffixes, str) else suffixes
    return sum(value for key, value in entry.items() if key.startswith(PROFILE_PREFIX) and key.endswith(suffixes))


def step_profile(log_history: list[dict], skip_first: bool = True) -> Profile:
    """Average the per-step timings over the logged windows, weighted by the steps each window covers."""
    windows, previous = [], 0
    for entry in log_history:
        if PROFILE_PREFIX + STEP_TIMING in entry:
            windows.append((entry, entry["step"] - previous))
            previous = entry["step"]
    if not windows:
        raise ValueError("The log history has no profiling timings: was the run made with train.py?")
    if skip_first and len(windows) > 1:
        windows = windows[1:]
    steps = sum(n for _, n in windows)

    def mean(get) -> float:
        return sum(get(entry) * n for entry, n in windows) / steps

    step = mean(lambda e: e[PROFILE_PREFIX + STEP_TIMING])
    generation = mean(lambda e: _timing(e, GENERATION))
    reward = mean(lambda e: _timing(e, REWARD))
    prepare = mean(lambda e: _timing(e, PREPARE))
    return Profile(
        steps=steps,
        step=step,
        generation=generation,
        reward=reward,
        reference=max(prepare - generation - reward, 0.0),
        update=max(step - prepare, 0.0),
    )


def profile_report(result: Profile) -> str:
    lines = [f"{result.step:.2f} s per optimizer step (mean of {result.steps} steps)"]
    for name, seconds in result.rows():
        lines.append(f"  {name:<34} {seconds:7.2f} s  {100 * seconds / result.step:5.1f}%")
    return "\n".join(lines)
