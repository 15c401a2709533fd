"""The speech codes a clip was decoded from, kept in <stem>.codes.json beside its audio file (inference.py,
evaluate.py and the trainer's samples write it): preference data trains on exactly the tokens the policy sampled,
which encoding the audio again would not give back."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from llasa.format import build_messages, codes_from

CODES_SUFFIX = ".codes.json"


@dataclass(frozen=True)
class ClipCodes:
    """What a clip says and the tokens behind it: Llasa's prompt (the chat `build_messages` makes, voice prompt
    included) and the generated speech codes (the voice prompt's excluded)."""

    text: str
    prompt: list[dict]
    codes: list[int]
    samples: int  # length of the audio file written beside it: a file replaced since no longer matches

    @classmethod
    def for_text(cls, text: str, codes: list[int], samples: int, prompt_text=None, prompt_codes=None) -> "ClipCodes":
        prompt = build_messages(text, prompt_text, prompt_codes)
        return cls(text=text, prompt=prompt, codes=[int(code) for code in codes], samples=int(samples))


def codes_path(audio_path) -> Path:
    """x/clip.wav -> x/clip.codes.json"""
    return Path(audio_path).with_suffix(CODES_SUFFIX)


def write_clip_codes(audio_path, clip: ClipCodes) -> Path:
    path = codes_path(audio_path)
    path.write_text(json.dumps(asdict(clip)) + "\n", encoding="utf-8")
    return path


def read_clip_codes(audio_path) -> ClipCodes | None:
    """The codes written beside `audio_path`; None when there are none, or when the audio file no longer has the
    length it was written with (replaced since)."""
    import soundfile as sf

    path = codes_path(audio_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        clip = ClipCodes(
            text=str(record["text"]),
            prompt=list(record["prompt"]),
            codes=codes_from(record["codes"], str(path)),
            samples=int(record["samples"]),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a codes file this project wrote ({e}): move it away to encode the clip."
        ) from e
    if sf.info(str(audio_path)).frames != clip.samples:
        return None
    return clip


def clip_text(audio_path) -> str | None:
    """The text the codes file beside `audio_path` says the clip speaks (None without one, or unreadable)."""
    try:
        record = json.loads(codes_path(audio_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    text = record.get("text") if isinstance(record, dict) else None
    return text if isinstance(text, str) and text.strip() else None
