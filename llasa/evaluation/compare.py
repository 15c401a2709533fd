"""Comparing text-to-speech systems on a test list: every system's clips scored as the reward scores them (WER or
CER, the NLL of the text, the reward), with duration, speaking rate and llasa.scores' speech measures; a summary per
system with the differences from a baseline, as JSON, a markdown table and a plot."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from llasa.audio import SAMPLE_RATE, identical_clips_note
from llasa.checks import check_distinct_systems, split_system
from llasa.evaluation.report import REPORT_FILES, identical_to_baseline, summarize, write_report
from llasa.evaluation.seedtts import PROTOCOLS, protocol_reward_config, protocol_speaker_options
from llasa.evaluation.systems import (
    RESYNTHESIS,
    SCORE_CHUNK,
    System,
    find_audio,
    load_or_none,
    resynthesis_system,
    resynthesize,
    synthesize_models,
    system_outputs,
)
from llasa.format import VOICE_AUDIO_COLUMN
from llasa.outputs import check_replaceable
from llasa.scores import DNSMOS_METRICS, DnsmosScorer, SpeakerSimilarityScorer
from llasa.synthesis import INPUT_FORMATS, ModelOptions, Request, SamplingOptions, read_input_file
from llasa.text import text_length

logger = logging.getLogger(__name__)

# The llasa.scores measures compare can add, by the name of the reward component that scores them.
SPEECH_SCORES = ("speaker_similarity", "quality", "intonation")


@dataclass(frozen=True)
class CompareOptions:
    """What `compare` scores and where it writes; the systems are models (NAME=PATH), folders of clips (NAME=DIR) and
    the codec's resynthesis of the recordings."""

    test_list: str = field(metadata={"help": "Texts to speak, in inference.py's list formats."})
    output_dir: str = field(metadata={"help": "Where the results and the audio go."})
    input_format: Literal[INPUT_FORMATS] = field(default="auto", metadata={"help": "Format of --test_list."})
    models: list[str] = field(
        default_factory=list, metadata={"help": "Models to synthesise with.", "metavar": "NAME=PATH"}
    )
    audio_dir: list[str] = field(
        default_factory=list, metadata={"help": "Folders of <id>.wav to score.", "metavar": "NAME=DIR"}
    )
    baseline: str | None = field(
        default=None, metadata={"help": "The system the differences are taken from (default: the first)."}
    )
    reward_config: str = field(
        default="reward_models/wer_nll.json", metadata={"help": "The reward config whose ASR scores."}
    )
    speech_scores: list[str] = field(
        default_factory=lambda: list(SPEECH_SCORES),
        metadata={
            "help": "Speech measures to add, by reward component (none with an empty list).",
            "choices": SPEECH_SCORES,
            "nargs": "*",
        },
    )
    protocol: Literal[PROTOCOLS] | None = field(
        default=None,
        metadata={
            "help": "Score as Seed-TTS-eval does (replaces --reward_config): Whisper-large-v3, or Paraformer-zh for "
            "zh; SIM from a WavLM speaker-verification model; its table layout in summary.md."
        },
    )
    language: str | None = field(
        default=None, metadata={"help": "Language of the test list, with --protocol (en, zh, ...)."}
    )
    sim_model: str | None = field(
        default=None,
        metadata={"help": "WavLMForXVector checkpoint of --protocol's SIM (default: wavlm-base-plus-sv)."},
    )
    resynthesis: bool = field(
        default=False,
        metadata={
            "help": f"Add a system {RESYNTHESIS!r}: each line's recording (a Seed-TTS-eval 5th field, else the voice "
            "prompt) encoded and decoded by --codec_id, the codec's ceiling."
        },
    )

    def __post_init__(self):
        systems = [name for name, _ in self.model_paths + self.audio_dirs] + [RESYNTHESIS] * self.resynthesis
        if not systems:
            raise ValueError("Name at least one system: --models NAME=PATH, --audio_dir NAME=DIR or --resynthesis.")
        unknown = sorted(set(self.speech_scores) - set(SPEECH_SCORES))
        if unknown:
            raise ValueError(f"Unknown speech score(s) {', '.join(unknown)}: choose from {', '.join(SPEECH_SCORES)}.")
        if self.protocol is not None and self.language is None:
            raise ValueError(f"--protocol {self.protocol} needs --language (en or zh for Seed-TTS-eval's test sets).")
        if self.protocol is None and (self.language is not None or self.sim_model is not None):
            raise ValueError("--language and --sim_model go with --protocol; the reward config sets the language.")
        check_distinct_systems(systems)
        missing = [path for _, path in self.audio_dirs if not Path(path).is_dir()]
        if missing:
            raise ValueError(f"--audio_dir folder(s) not found: {', '.join(missing)}.")
        if self.baseline is not None and self.baseline not in systems:
            raise ValueError(f"--baseline {self.baseline} is not one of the systems: {', '.join(systems)}.")

    @property
    def model_paths(self) -> list[tuple[str, str]]:
        return [split_system(value) for value in self.models]

    @property
    def audio_dirs(self) -> list[tuple[str, str]]:
        return [split_system(value, "DIR", "other=outputs/other_tts") for value in self.audio_dir]


def score_system(
    system: System,
    requests: list[Request],
    reward,
    speech_scores: Sequence[str] = (),
    device: str = "auto",
    speaker: dict | None = None,
) -> list[dict]:
    """One record per request: the reward module's scores of <audio_dir>/<id>.wav plus duration, speaking rate and
    the chosen llasa.scores measures. A clip that is missing or unreadable gets status "missing"."""
    from tqdm.auto import tqdm

    records = []
    for start in tqdm(range(0, len(requests), SCORE_CHUNK), desc=f"Scoring {system.name}", unit="chunk"):
        chunk = requests[start : start + SCORE_CHUNK]
        paths = [find_audio(system.audio_dir, request.id) for request in chunk]
        audio = [load_or_none(path) for path in paths]
        present = [i for i, wav in enumerate(audio) if wav is not None]
        # The voice prompt is what the reward's speaker similarity compares with.
        voices = {VOICE_AUDIO_COLUMN: [chunk[i].prompt_wav for i in present]}
        clips = reward.score_audio([audio[i] for i in present], [chunk[i].text for i in present], voices)
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
            duration = len(audio[i]) / SAMPLE_RATE
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


def _str(path) -> str | None:
    return None if path is None else str(path)


def _speaking_rate(text: str, duration: float) -> float | None:
    return text_length(text) / duration if duration > 0 else None


def _speech_scores(
    audio: list[np.ndarray], requests: list[Request], names: Sequence[str], device: str, speaker: dict
) -> list[dict]:
    """The llasa.scores measures of each clip: raw values, not the rewards' [0, 1] mappings. `speaker`: options
    of the speaker similarity's scorer (backend, model)."""
    measures = [{} for _ in audio]
    if not audio:
        return measures
    if "speaker_similarity" in names:
        # Only voice-cloning lines have a voice to compare with; the others get None.
        references = [load_or_none(request.prompt_wav) for request in requests]
        cosines = SpeakerSimilarityScorer(device=device, **speaker).similarities(audio, references)
        for row, value in zip(measures, cosines, strict=True):
            row["speaker_cosine"] = value
    if "quality" in names:
        for row, mos in zip(measures, DnsmosScorer(device="auto").mos(audio), strict=True):
            row.update({f"dnsmos_{metric}": None if mos is None else mos[metric] for metric in DNSMOS_METRICS})
    if "intonation" in names:
        from llasa.prosody import IntonationScorer

        for row, shape in zip(measures, IntonationScorer(device=device).measures(audio), strict=True):
            row["pitch_movement"] = None if shape is None else shape.movement
            row["pitch_roughness"] = None if shape is None else shape.roughness
    return measures


def check_inputs(options: CompareOptions, models: ModelOptions) -> None:
    """Every model, folder and file compare needs, checked before any model loads or any clip is synthesised."""
    from llasa.checks import check_codec, check_input_file, check_llasa_model, check_output_dir
    from llasa.rewards import check_reward_config

    check_input_file(options.test_list, "--test_list")
    check_output_dir(options.output_dir)
    check_output_dir(Path(options.output_dir) / "audio", "--output_dir's audio folder")
    for name, path in options.model_paths:
        check_llasa_model(path, f"--models {name}=")
        check_output_dir(Path(options.output_dir) / "audio" / name, f"--models {name}'s audio folder")
    if options.models:
        check_codec(models.codec_id)
    if options.protocol is None:
        check_reward_config(options.reward_config)


def compare(
    options: CompareOptions, sampling: SamplingOptions | None = None, models: ModelOptions | None = None
) -> dict:
    """Synthesise with the models, score every system, write clips.jsonl, summary.json, summary.md and the plot;
    return the summary. Every model samples from `sampling`'s seed (default 0), so differences come from the weights."""
    from llasa.rewards import codec_of, load_reward

    sampling = SamplingOptions(seed=0) if sampling is None else sampling
    models = ModelOptions() if models is None else models
    # Synthesis decodes with the codec the reward's scores assume, unless --codec_id names another.
    reward_codec = None if options.protocol is not None else options.reward_config
    models = replace(models, codec_id=codec_of(models.codec_id, reward_codec))

    output_dir = Path(options.output_dir)
    check_inputs(options, models)
    requests, skipped = read_input_file(options.test_list, options.input_format)
    for skip in skipped:
        logger.warning("Skipped %s", skip.reason)
    if not requests:
        raise ValueError(f"{options.test_list} holds no usable line.")
    systems = [System(name, output_dir / "audio" / name, model=path) for name, path in options.model_paths]
    systems += [System(name, Path(path)) for name, path in options.audio_dirs]
    if options.resynthesis:
        systems.append(resynthesis_system(requests, output_dir))
    paths = [output_dir / name for name in REPORT_FILES] + system_outputs(systems, requests)
    check_replaceable(paths, "--output_dir")
    # The reward config is checked and its models loaded before hours of synthesis, not after.
    reward_config = options.reward_config
    if options.protocol is not None:
        reward_config = protocol_reward_config(options.language, models.codec_id)
    reward = load_reward(reward_config, device=None if models.device == "auto" else models.device)
    reward.load_models(codec=bool(options.models))  # the codec decodes nothing when only audio folders are scored
    synthesize_models(systems, requests, sampling, models)
    if options.resynthesis:
        resynthesize(systems[-1], models.codec_id, models.device)
    speaker = protocol_speaker_options(options.sim_model) if options.protocol is not None else {}
    records = [
        record
        for system in systems
        for record in score_system(
            system, list(system.requests or requests), reward, options.speech_scores, models.device, speaker
        )
    ]
    names = [system.name for system in systems]
    summary = summarize(records, names, options.baseline or names[0])
    summary.update(test_list=str(options.test_list), n_texts=len(requests), n_skipped_lines=len(skipped))
    summary["identical_to_baseline"] = identical_to_baseline(records, names, summary["baseline"])
    for system, counts in summary["identical_to_baseline"].items():
        logger.warning(
            "%s", identical_clips_note(summary["baseline"], system, counts["identical"], counts["compared"])
        )
    write_report(output_dir, records, summary, options.test_list, options.language if options.protocol else None)
    return summary
