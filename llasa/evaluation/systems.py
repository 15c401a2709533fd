"""The systems an evaluation compares, and their audio: models synthesise the test list (kept when an earlier run made
it with the same settings), folders of clips are read as they are, and the codec's resynthesis of the recordings is
the ceiling a model can reach through the codec."""

import gc
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from llasa.audio import PLAYABLE_AUDIO_TYPES, SAMPLE_RATE, load_audio
from llasa.outputs import claim, write_text
from llasa.synthesis import ModelOptions, Request, SamplingOptions, output_paths

logger = logging.getLogger(__name__)

SCORE_CHUNK = 64  # clips held in memory at once
RESYNTHESIS = "resynthesis"  # the system name of the codec's resynthesis of the reference recordings
# Written into audio/<system>/ once its synthesis finished: a rerun with the same settings reuses its clips.
SYNTHESIS_MARKER = "synthesis.json"


@dataclass(frozen=True)
class System:
    """A system to score: a model to synthesise with, or a folder of <id>.wav it already produced."""

    name: str
    audio_dir: Path
    model: str | None = None  # checkpoint to synthesise with; None for an --audio_dir
    requests: tuple[Request, ...] | None = None  # its own lines (resynthesis: the recordings' texts); None: the list's
    recordings: dict[str, str] | None = None  # resynthesis: id -> the recording the codec encodes and decodes


def synthesis_settings(
    system: System, requests: list[Request], sampling: SamplingOptions, models: ModelOptions
) -> dict:
    """What a system's clips depend on: the model, the codec, the sampling settings and the texts."""
    model = Path(system.model).expanduser()
    return {
        "model": str(model.resolve()) if model.exists() else system.model,
        "codec_id": str(models.codec_id),
        "dtype": str(models.dtype),
        "batch_size": models.batch_size,
        "sampling": asdict(sampling),
        "requests": [[r.id, r.text, r.prompt_wav, r.prompt_text] for r in requests],
    }


def _finished(system: System, settings: dict) -> bool:
    marker = system.audio_dir / SYNTHESIS_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == settings
    except (OSError, ValueError):
        return False


def synthesize_models(
    systems: Sequence[System], requests: list[Request], sampling: SamplingOptions, models: ModelOptions
) -> None:
    """Speak the test list with each model system into its audio_dir, one model in memory at a time.

    A system whose synthesis finished earlier with the same settings (its SYNTHESIS_MARKER) is kept, not redone."""
    import torch

    from llasa.clip_codes import codes_path
    from llasa.codec import load_codec
    from llasa.synthesis import load_model, run

    settings = {s.name: synthesis_settings(s, requests, sampling, models) for s in systems if s.model is not None}
    todo = []
    for system in systems:
        if system.model is not None and _finished(system, settings[system.name]):
            logger.info("Keeping %s's clips: synthesised earlier with the same settings.", system.name)
        elif system.model is not None:
            todo.append(system)
    if not todo:
        return
    # Voice prompts are encoded; without them the codec only decodes, and loads without its encoders.
    codec = load_codec(models.codec_id, device=models.device, decode_only=not any(r.prompt_wav for r in requests))
    for system in todo:
        logger.info("Synthesising with %s (%s).", system.name, system.model)
        # Clips left from an earlier run would be scored as this run's where this run skips a line.
        (system.audio_dir / SYNTHESIS_MARKER).unlink(missing_ok=True)
        for request in requests:
            (system.audio_dir / f"{request.id}.wav").unlink(missing_ok=True)
            codes_path(system.audio_dir / f"{request.id}.wav").unlink(missing_ok=True)
        llasa = load_model(system.model, models.device, models.dtype)
        # Every model restarts from the same seed, so differences come from the weights.
        run(llasa, codec, requests, system.audio_dir, sampling, batch_size=models.batch_size)
        claim([system.audio_dir / SYNTHESIS_MARKER], "--output_dir")
        write_text(system.audio_dir / SYNTHESIS_MARKER, json.dumps(settings[system.name], indent=2) + "\n")
        del llasa
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def find_audio(audio_dir: Path, clip_id: str) -> Path | None:
    """<audio_dir>/<clip_id>.wav, else the same stem with another playable suffix; None if there is none."""
    for suffix in PLAYABLE_AUDIO_TYPES:
        path = audio_dir / f"{clip_id}{suffix}"
        if path.is_file():
            return path
    return None


def load_or_none(path) -> np.ndarray | None:
    """The clip at 16 kHz, or None (with a warning) where there is none or it cannot be read."""
    if path is None:
        return None
    try:
        return load_audio(path, SAMPLE_RATE)
    except RuntimeError as e:
        logger.warning("%s", e)
        return None


def resynthesis_system(requests: list[Request], output_dir: Path) -> System:
    """The codec's ceiling as a system: each line's recording encoded and decoded, scored against its text. The
    recording is the line's own (Seed-TTS-eval's 5th field), else its voice prompt, scored against the prompt's
    transcript (and, for SIM, against the prompt itself). Lines with neither are counted as missing."""
    lines, recordings = [], {}
    for request in requests:
        if request.recording is not None:
            lines.append(request)
            recordings[request.id] = request.recording
        elif request.prompt_wav is not None and request.prompt_text:
            lines.append(replace(request, text=request.prompt_text))
            recordings[request.id] = request.prompt_wav
        else:
            lines.append(request)
    if not recordings:
        raise ValueError(
            "--resynthesis needs recordings: no line of the test list has a ground-truth audio (a 5th field) or a "
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
        audio = [load_or_none(path) for _, path in chunk]
        present = [i for i, wav in enumerate(audio) if wav is not None and wav.size]
        decoded = codec.decode(codec.encode([audio[i] for i in present])) if present else []
        for i, wav in zip(present, decoded, strict=True):
            write_wav(system.audio_dir / f"{chunk[i][0]}.wav", wav, SAMPLE_RATE)
    logger.info("Resynthesised %d recordings with %s into %s.", len(items), codec_id, system.audio_dir)


def system_outputs(systems: Sequence[System], requests: list[Request]) -> list[Path]:
    """Every file the systems' synthesis writes: each model's clips and synthesis record, the resynthesised clips."""
    paths = []
    for system in systems:
        if system.model is not None:
            paths += [*output_paths(requests, system.audio_dir), system.audio_dir / SYNTHESIS_MARKER]
        elif system.recordings is not None:
            paths += [system.audio_dir / f"{clip_id}.wav" for clip_id in system.recordings]
    return paths
