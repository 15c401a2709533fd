"""Seed-TTS-eval's protocol: its ASR per language and error rate, SIM from a WavLM speaker-verification model, and
its table layout (mean WER or CER in percent, mean SIM)."""

from llasa.scores import DEFAULT_WAVLM_MODEL
from llasa.text import CER_LANGUAGES

PROTOCOLS = ("seed-tts-eval",)
# Seed-TTS-eval's ASR: Paraformer-zh (FunASR) for Chinese, Whisper-large-v3 otherwise.
SEED_TTS_EVAL_ASR = {"zh": ("paraformer", "paraformer-zh")}
SEED_TTS_EVAL_WHISPER = ("openai-whisper", "large-v3")


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
