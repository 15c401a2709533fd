"""The Whisper reward for GRPO on Llasa: how well Whisper recognises the reference text in the generated speech.

Each completion's speech tokens are decoded to audio with XCodec2 and scored by Whisper (arXiv 2509.18798):

    R_err = 1 - tanh(alpha_err * ERR)        ERR: WER, or CER for languages written without spaces (zh, ja, ko, th...)
    R_nll = exp(-NLL / alpha_nll)            NLL: mean per-token negative log-likelihood of the reference text
    R     = (l_err + l_nll) / (l_err / R_err + l_nll / R_nll)     weighted harmonic mean, clamped to [0, 1]

with alpha_err = alpha_nll = 3, l_err = 0.6 and l_nll = 0.4 (reward_models/wer_nll.json). "combine": "sum" gives the
weighted mean (l_err * R_err + l_nll * R_nll) / (l_err + l_nll) instead: the plain weighted sum when the weights add
up to 1, as the paper's do. ERR compares Whisper's greedy transcript with the reference after Whisper's own text
normaliser (English for "en", the basic one otherwise; spaces are removed for CER).

NLL: the reference text (raw, with a leading space as Whisper writes it, except in languages without spaces) is
teacher-forced through the decoder after the prefix <|startoftranscript|>[<|lang|><|transcribe|>]<|notimestamps|>.
Each text token's probability is renormalised over the text vocabulary (ids below <|endoftext|>) and EOT is not
scored: this is what CTranslate2's `align` returns and cannot be changed, so all three back ends compute it that way
and agree on the same weights. A reference longer than the decoder's context is cut to fit.

The reference text is the dataset's text column (`text_column`), never parsed from the prompt, and only the
completion is scored: for voice cloning (prompt audio codes in the prompt) that is the continuation, so the text
column must hold the target text alone, without the voice prompt's transcript.

One pass per batch: completion ids -> codes -> one batched codec decode -> one Whisper encoder pass whose output
feeds both the greedy transcription and the teacher-forced NLL. `batch_size` completions go through at a time, which
bounds memory. Models load lazily, once per process, on the reward's own `device` (fp16 on GPU by default).

Three ASR back ends share one interface, `transcribe_and_score(waveforms, texts) -> (transcripts, nll)`:
"openai-whisper" (names such as large-v3 or a local .pt checkpoint), "transformers" (Hub ids such as
openai/whisper-large-v3, fine-tuned Whisper models, local folders) and "faster-whisper" (CTranslate2 models: sizes,
Hub ids or local folders). Each computes its input features as its own transcription does: openai-whisper and
faster-whisper zero-pad the log-mel of the clip to 3000 frames, transformers pads the audio to 30 s (what models
fine-tuned with it saw), so the same weights give the same NLL through the first two and a close one through the third.

Edge cases, none of which raises during training:
- no speech tokens in a completion (or empty audio): reward 0.0, counted as `no_speech`;
- tokens that are not speech (or out-of-range ids) before the end marker: dropped and counted as `dropped_tokens`;
- audio that is not finite: reward 0.0, counted as `non_finite`;
- audio longer than Whisper's 30 s window: Whisper hears its first 30 s only, and the ERR and NLL against the full
  reference penalise the words spoken after them, so no special rule is needed: a clip that fits its text into 30 s
  and trails off scores as usual, one still speaking past 30 s loses what it said there. Counted as `over_30s`.
  (Llasa's 2048-token context holds about 40 s of speech.)
- empty reference text: None (the row cannot be scored; TRL leaves it out), with a warning.

Components: the reward is a weighted combination of components named in the config, looked up in a registry
(`register_component`). A component is built from its JSON parameters, sees a `ScoringBatch` (generated audio at 16
kHz, reference texts, Whisper's transcripts and NLL when a component needs them, the other dataset columns) and
returns a score in [0, 1] or None per clip, plus raw metrics to log. Where a component returns None for a row, that
row's reward combines the components that did score it, with their weights; a row no component scores gets None.

    wer, nll             the formulas above; log "wer" (or "cer") and "nll"
    duration             speaking rate (speech_scores.DurationScorer); logs "duration_ratio" (clip / expected seconds)
    pitch                intonation, F0 spread in semitones (PitchVariationScorer); logs "pitch_semitones"
    speaker_similarity   voice, resemblyzer cosine with the voice prompt or reference (SpeakerSimilarityScorer);
                         logs "speaker_cosine"
    quality              DNSMOS P.835 (DnsmosScorer); logs "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"

Each takes "weight" plus its scorer's parameters (e.g. "tolerance", "num_workers") and the columns it reads; every
score is logged as "reward_<component>" (reward_models/prosody_reward.json combines all six).

Column contract. TRL passes every dataset column to the reward as a keyword list (one value per completion);
`score_audio` and `score_codes` take them as `columns={"name": [...]}`. The components read:
- `duration` (float, seconds): the reference recording's length, as create_dataset.py writes it. The duration
  component's expected duration; without it, the reference audio's length (below), else the text's length over
  "chars_per_second" (unset: estimated once, from the first batch that needs it, over its (text, duration) pairs;
  with no pair either, the row is left unscored and a warning asks to set it).
- `audio_code_ids` (list of ints): the reference recording's XCodec2 codes (create_dataset.py). Decoded with the
  reward's codec once per distinct reference per call (keyed by a hash: GRPO repeats each reference over its group)
  to give the pitch component its reference spread and the speaker_similarity component its reference voice.
- `prompt_code_ids` (list of ints): the voice prompt's codes in voice-cloning GRPO, per row (also when one voice is
  given for all rows). The completion holds only the continuation: it is decoded after these codes and the prompt's
  samples are cut off, as inference does, so the reward hears what users hear. speaker_similarity prefers this voice
  to the reference recording.
- `prompt_audio` (an audio file path): the voice prompt, where it is a file (inference's best-of-N, evaluation).
- `reference_audio` (an audio file path): the reference recording, in place of its codes (command line, evaluation).
A code column may also hold a speech-token string; any reference column may hold a path. Which columns a component
reads, in order of preference, is its "duration_column", "reference_columns" or "voice_columns" parameter. A
row without its component's input gets None from it (speaker_similarity: no voice; duration: no reference and a
text without letters): the share of such rows is logged as "<component>/missing", with one warning per call, and
their reward combines the other components. "<component>/unscored" logs the share of scored rows each component
gave None for any reason (its input missing, or a clip too short or too silent to measure). pitch without a
reference scores the spread against its "natural_range" (the share logged as "pitch/no_reference").

Cost: the speech scores run on the CPU (the speaker encoder on the reward's GPU), so on a GPU they can outlast
Whisper itself; the README's performance table gives each one's cost next to Whisper's
(`python -m benchmarks.bench_speech_scores --whisper tiny.en`). pitch (pYIN) costs most: its "num_workers" runs it in
that many processes per training process: set it to the CPU cores each GPU can spare (0 runs it in the training
process itself); quality's "num_threads" bounds DNSMOS's threads (0: all cores, for each training process).

Score audio files, or replay completions (speech-token strings or code lists) from a JSONL file:

    python reward_whisper.py --reward_config reward_models/wer_nll.json --audio a.wav b.wav --text "first" "second"
    python reward_whisper.py --reward_config reward_models/wer_nll.json --input_file clips.jsonl   # {"audio", "text"}
    python reward_whisper.py --reward_config reward_models/wer_nll.json --codes_file completions.jsonl  # {"codes", "text"}
    python reward_whisper.py --reward_config reward_models/prosody_reward.json --audio a.wav --text "first" \\
        --reference_audio ref.wav

A JSONL line's other keys are columns: {"audio": "a.wav", "text": "first", "reference_audio": "ref.wav"}.
"""

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llasa.codec import DEFAULT_CODEC_ID, decode_continuations, load_codec
from llasa.device import resolve_device
from llasa.format import (
    CODEBOOK_SIZE,
    END_OF_TURN,
    SPEECH_GENERATION_END,
    TOKENS_PER_SECOND,
    ParsedSpeech,
    SpeechVocab,
    codes_from,
    tokens_to_codes,
)
from speech_scores import (
    DNSMOS_METRICS,
    DnsmosScorer,
    DurationScorer,
    PitchVariationScorer,
    SpeakerSimilarityScorer,
    estimate_speaking_rate,
)

logger = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE = 16000  # every Whisper reads 16 kHz mono
# The dataset column of a row's voice prompt codes (voice-cloning GRPO): continuations are decoded after them.
VOICE_PROMPT_CODES_COLUMN = "prompt_code_ids"
WHISPER_WINDOW_SECONDS = 30  # Whisper pads or cuts its input to 30 s
WHISPER_WINDOW_SAMPLES = WHISPER_SAMPLE_RATE * WHISPER_WINDOW_SECONDS
WHISPER_HOP = 160  # mel frame hop in samples: 3000 frames per window
WHISPER_N_FFT = 400  # STFT window: zeros padded beyond it change none of the clip's frames
WHISPER_FRAMES = WHISPER_WINDOW_SAMPLES // WHISPER_HOP
WHISPER_TEXT_CONTEXT = 448  # decoder positions of every Whisper model (prefix + text)

# Languages written without spaces between words: scored by CER, and their text tokens take no leading space.
NO_SPACE_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})
# Korean puts spaces between phrases, but its error rate is reported per character (as in the paper).
CER_LANGUAGES = NO_SPACE_LANGUAGES | {"ko"}

BACKENDS = ("openai-whisper", "transformers", "faster-whisper")
COMBINE_RULES = ("harmonic", "sum")
DTYPES = ("auto", "float16", "bfloat16", "float32")


# ---------------------------------------------------------------------------------------------------------------------
# The formulas


def error_reward(err: float, alpha: float) -> float:
    """R_err = 1 - tanh(alpha * ERR): 1 for a perfect transcript, towards 0 as errors grow (ERR may exceed 1)."""
    return 1.0 - math.tanh(alpha * err)


def nll_reward(nll: float, alpha: float) -> float:
    """R_nll = exp(-NLL / alpha): 1 when Whisper is certain of every reference token."""
    return math.exp(-nll / alpha)


def combine_scores(scores: Sequence[float | None], weights: Sequence[float], rule: str) -> float | None:
    """Weighted harmonic mean ("harmonic") or weighted mean ("sum") of the scores that are not None, in [0, 1].

    Components that returned None (and weight-0 components) are left out and the others keep their weights; with
    none left the result is None. In the harmonic mean one score of 0 makes the result 0.
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"Unknown combine rule {rule!r}: use one of {list(COMBINE_RULES)}.")
    pairs = [
        (weight, score) for score, weight in zip(scores, weights, strict=True) if score is not None and weight > 0
    ]
    if not pairs:
        return None
    total = sum(weight for weight, _ in pairs)
    if rule == "harmonic":
        if any(score <= 0 for _, score in pairs):
            return 0.0
        combined = total / sum(weight / score for weight, score in pairs)
    else:
        combined = sum(weight * score for weight, score in pairs) / total
    return min(max(combined, 0.0), 1.0)


def error_metric(metric: str, language: str) -> str:
    """The error rate to compute: `metric` itself, or for "auto" CER where scored per character, else WER."""
    if metric == "auto":
        return "cer" if language in CER_LANGUAGES else "wer"
    return metric


@functools.cache
def text_normalizer(language: str):
    """Whisper's English normaliser for "en" (spellings, numbers, contractions), its basic one otherwise."""
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer() if language == "en" else BasicTextNormalizer()


def normalize_text(text: str, language: str, metric: str) -> str:
    """The text as the error rate compares it: Whisper's normaliser; CER ignores spaces."""
    normalized = " ".join(text_normalizer(language)(text).split())
    return normalized.replace(" ", "") if metric == "cer" else normalized


def error_rate(reference: str, hypothesis: str, language: str, metric: str = "auto") -> float | None:
    """WER or CER of one transcript after normalisation; None if the normalised reference is empty."""
    import jiwer

    metric = error_metric(metric, language)
    reference = normalize_text(reference, language, metric)
    hypothesis = normalize_text(hypothesis, language, metric)
    if not reference:
        return None
    if metric == "cer":
        return jiwer.process_characters(reference, hypothesis).cer
    return jiwer.process_words(reference, hypothesis).wer


# ---------------------------------------------------------------------------------------------------------------------
# ASR back ends: for a batch of 16 kHz waveforms and reference texts, the greedy transcripts and each text's NLL,
# from one encoder pass


def resolve_dtype(dtype: str, device: str) -> str:
    """The dtype for "auto": float16 on GPU, float32 on CPU."""
    if dtype != "auto":
        return dtype
    return "float16" if device.startswith("cuda") else "float32"


def text_prefix(text: str, language: str) -> str:
    """The reference as Whisper writes a transcript: after a space, except in languages without spaces."""
    text = text.strip()
    return text if language in NO_SPACE_LANGUAGES else " " + text


def first_window(waveform: np.ndarray) -> np.ndarray:
    """The first 30 s: all Whisper hears of a longer clip."""
    return np.ascontiguousarray(waveform[:WHISPER_WINDOW_SAMPLES], dtype=np.float32)


def text_nll(logits, targets: list[int], eot: int) -> float:
    """-mean log p(target) over the text vocabulary (ids below EOT), from the logits that predict each target."""
    import torch

    log_probs = torch.log_softmax(logits[:, :eot].float(), dim=-1)
    rows = torch.arange(len(targets), device=logits.device)
    return -log_probs[rows, torch.tensor(targets, device=logits.device)].mean().item()


def check_language(model_name: str, multilingual: bool, language: str) -> None:
    if not multilingual and language != "en":
        raise ValueError(
            f"The Whisper model {model_name!r} is English-only and cannot transcribe {language!r}: set language to "
            "'en' or use a multilingual model (e.g. large-v3)."
        )


class AsrBackend:
    """One Whisper model on one device. Subclasses implement `encode`, `transcribe` and `nll`."""

    name: ClassVar[str]
    prefix: list[int]  # <|startoftranscript|>[<|lang|><|transcribe|>]<|notimestamps|>: what precedes the text

    def __init__(self, model_name: str, *, device: str, dtype: str, language: str, max_new_tokens: int):
        self.model_name, self.device, self.dtype = model_name, device, dtype
        self.language, self.max_new_tokens = language, max_new_tokens
        try:
            self._load()
        except Exception as e:
            raise RuntimeError(f"Could not load the {self.name} model {model_name!r} on {device}: {e}") from e

    def _load(self) -> None:
        raise NotImplementedError

    def encode(self, waveforms: Sequence[np.ndarray]):
        """The encoder output for a batch of 16 kHz waveforms (each cut or padded to 30 s)."""
        raise NotImplementedError

    def transcribe(self, features) -> list[str]:
        """Greedy transcripts from the encoder output."""
        raise NotImplementedError

    def nll(self, features, texts: Sequence[str]) -> list[float]:
        """Teacher-forced NLL of each reference text from the encoder output."""
        raise NotImplementedError

    def transcribe_and_score(
        self, waveforms: Sequence[np.ndarray], texts: Sequence[str]
    ) -> tuple[list[str], list[float]]:
        """Transcripts and NLLs of a batch, with one encoder pass shared by both."""
        import torch

        with torch.inference_mode():
            features = self.encode(waveforms)
            return self.transcribe(features), self.nll(features, texts)

    def _text_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        """Each reference's text tokens, cut to fit the decoder's context after the prefix (and CTranslate2's EOT)."""
        room = WHISPER_TEXT_CONTEXT - len(self.prefix) - 1
        return [self._encode_text(text_prefix(text, self.language))[:room] for text in texts]

    def _encode_text(self, text: str) -> list[int]:
        raise NotImplementedError


class OpenAIWhisperBackend(AsrBackend):
    """openai-whisper: `embed_audio` once; `whisper.decode` skips the encoder when given its output."""

    name = "openai-whisper"

    def _load(self) -> None:
        import torch
        import whisper

        if self.dtype == "bfloat16":
            raise ValueError("openai-whisper decodes in float16 or float32 only: set dtype to 'float16' or 'float32'.")
        self.torch_dtype = getattr(torch, self.dtype)
        self.model = whisper.load_model(self.model_name, device=self.device).eval()
        if self.dtype == "float16":
            # Half-precision weights, but LayerNorm's stay float32: whisper computes LayerNorm in float32 anyway, and
            # otherwise casts every weight to the input's dtype at every call.
            self.model.half()
            for module in self.model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.float()
        check_language(self.model_name, self.model.is_multilingual, self.language)
        self.tokenizer = whisper.tokenizer.get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=self.language if self.model.is_multilingual else None,
            task="transcribe",
        )
        self.prefix = list(self.tokenizer.sot_sequence_including_notimestamps)

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def encode(self, waveforms):
        import torch
        import whisper

        mels = []
        for wav in waveforms:
            clip = first_window(wav)
            # As whisper.transcribe: the log-mel of the clip followed by silence (normalised over it), zero-padded
            # to 3000 frames. whisper.transcribe appends 30 s of silence; one STFT window of it gives the same frames.
            mel = whisper.log_mel_spectrogram(
                torch.from_numpy(clip), self.model.dims.n_mels, padding=WHISPER_N_FFT, device=self.device
            )
            mels.append(whisper.pad_or_trim(mel[:, : len(clip) // WHISPER_HOP], WHISPER_FRAMES))
        return self.model.embed_audio(torch.stack(mels).to(self.torch_dtype))

    def transcribe(self, features) -> list[str]:
        import whisper

        options = whisper.DecodingOptions(
            task="transcribe",
            language=self.language,  # "en" for English-only models; None would ask for language detection
            without_timestamps=True,
            sample_len=self.max_new_tokens,
            fp16=self.dtype == "float16",
        )
        results = whisper.decode(self.model, features, options)
        # Special tokens a model may emit are not text (transformers and faster-whisper drop them too).
        return [
            self.tokenizer.decode([t for t in result.tokens if t < self.tokenizer.eot]).strip() for result in results
        ]

    def nll(self, features, texts) -> list[float]:
        import torch

        targets = self._text_tokens(texts)
        width = len(self.prefix) + max(len(tokens) for tokens in targets)
        # Right padding: the decoder is causal, so padding never changes the logits of the real tokens.
        rows = [(self.prefix + tokens + [self.tokenizer.eot] * width)[:width] for tokens in targets]
        logits = self.model.logits(torch.tensor(rows, device=features.device), features)
        start = len(self.prefix) - 1  # the logits at position i predict token i + 1
        return [
            text_nll(logits[row, start : start + len(tokens)], tokens, self.tokenizer.eot)
            for row, tokens in enumerate(targets)
        ]


class TransformersBackend(AsrBackend):
    """transformers: the encoder once, then `generate(encoder_outputs=...)` and a decoder forward for the NLL."""

    name = "transformers"

    def _load(self) -> None:
        import torch
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        self.torch_dtype = getattr(torch, self.dtype)
        self.model = WhisperForConditionalGeneration.from_pretrained(self.model_name, dtype=self.torch_dtype)
        self.model.to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(self.model_name)
        self.tokenizer = self.processor.tokenizer
        self.multilingual = self.model.config.vocab_size >= 51865  # openai-whisper's own test
        check_language(self.model_name, self.multilingual, self.language)
        if self.multilingual:
            self.tokenizer.set_prefix_tokens(language=self.language, task="transcribe", predict_timestamps=False)
        else:
            self.tokenizer.set_prefix_tokens(predict_timestamps=False)
        self.prefix = list(self.tokenizer.prefix_tokens)
        self.eot = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        # Greedy; the length is set as max_length (prefix included) since transformers warns at every call when
        # max_new_tokens and the checkpoint's max_length are both set.
        self.generation_config = self.model.generation_config
        self.generation_config.update(max_length=len(self.prefix) + self.max_new_tokens, num_beams=1, do_sample=False)

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode(self, waveforms):
        extractor = self.processor.feature_extractor
        # transformers' own convention (what its fine-tuned models were trained on): the audio is padded to 30 s.
        inputs = extractor(
            [first_window(wav) for wav in waveforms], sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="pt"
        ).input_features
        return self.model.get_encoder()(input_features=inputs.to(self.device, self.torch_dtype))

    def transcribe(self, features) -> list[str]:
        language = {"language": self.language, "task": "transcribe"} if self.multilingual else {}
        sequences = self.model.generate(
            encoder_outputs=features, generation_config=self.generation_config, return_timestamps=False, **language
        )
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]

    def nll(self, features, texts) -> list[float]:
        import torch

        targets = self._text_tokens(texts)
        width = len(self.prefix) + max(len(tokens) for tokens in targets)
        # Right padding: the decoder is causal, so padding never changes the logits of the real tokens.
        rows = [(self.prefix + tokens + [self.eot] * width)[:width] for tokens in targets]
        logits = self.model(
            encoder_outputs=features, decoder_input_ids=torch.tensor(rows, device=self.device), use_cache=False
        ).logits
        start = len(self.prefix) - 1
        return [
            text_nll(logits[row, start : start + len(tokens)], tokens, self.eot) for row, tokens in enumerate(targets)
        ]


class FasterWhisperBackend(AsrBackend):
    """faster-whisper / CTranslate2: `encode` once; `generate` and `align` both accept the encoder output."""

    name = "faster-whisper"

    def _load(self) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        device, _, index = self.device.partition(":")
        compute_type = self.dtype  # CTranslate2's names: float16, bfloat16, float32
        loaded = WhisperModel(self.model_name, device=device, device_index=int(index or 0), compute_type=compute_type)
        self.model = loaded.model
        self.feature_extractor = loaded.feature_extractor
        n_mels = self.feature_extractor.mel_filters.shape[0]
        if n_mels != self.model.n_mels:
            raise ValueError(
                f"The model reads {self.model.n_mels} mel bins but its preprocessor gives {n_mels}: add the model's "
                "preprocessor_config.json to its folder."
            )
        check_language(self.model_name, self.model.is_multilingual, self.language)
        self.tokenizer = Tokenizer(
            loaded.hf_tokenizer,
            self.model.is_multilingual,
            task="transcribe",
            language=self.language if self.model.is_multilingual else None,
        )
        # `align` appends <|notimestamps|> to the start sequence itself; `generate` needs it in the prompt.
        self.start_sequence = list(self.tokenizer.sot_sequence)
        self.prefix = self.start_sequence + [self.tokenizer.no_timestamps]

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def encode(self, waveforms):
        import ctranslate2
        from faster_whisper.audio import pad_or_trim

        clips = [first_window(wav) for wav in waveforms]
        # As faster-whisper's transcribe: the log-mel of the clip, zero-padded to 3000 frames.
        mels = [pad_or_trim(self.feature_extractor(clip)[:, : len(clip) // WHISPER_HOP]) for clip in clips]
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels), dtype=np.float32))
        return _EncodedAudio(self.model.encode(features), [len(clip) for clip in clips])

    def transcribe(self, features) -> list[str]:
        results = self.model.generate(
            features.output,
            [self.prefix] * len(features.n_samples),
            beam_size=1,
            max_length=len(self.prefix) + self.max_new_tokens,
            suppress_blank=True,
            suppress_tokens=[-1],  # the non-speech symbols, as openai-whisper's default
        )
        return [self.tokenizer.decode(result.sequences_ids[0]).strip() for result in results]

    def nll(self, features, texts) -> list[float]:
        targets = self._text_tokens(texts)
        frames = [max(n // WHISPER_HOP, 1) for n in features.n_samples]  # used for the alignment, not the probs
        results = self.model.align(features.output, self.start_sequence, targets, frames)
        return [-float(np.mean(np.log(result.text_token_probs))) for result in results]


@dataclass(frozen=True)
class _EncodedAudio:
    output: Any  # CTranslate2 StorageView on the model's device
    n_samples: list[int]  # real (unpadded) samples per clip, at most 30 s


BACKEND_CLASSES = {
    backend.name: backend for backend in (OpenAIWhisperBackend, TransformersBackend, FasterWhisperBackend)
}
_LOADED_BACKENDS: dict[tuple, AsrBackend] = {}
_LOADED_CODECS: dict[tuple, Any] = {}


def load_backend(
    backend: str,
    model: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    language: str = "en",
    max_new_tokens: int = 224,
) -> AsrBackend:
    """The ASR back end, loaded once per process for each (back end, model, device, dtype, language, length)."""
    if backend not in BACKEND_CLASSES:
        raise ValueError(f"Unknown ASR back end {backend!r}: use one of {list(BACKEND_CLASSES)}.")
    model = os.fspath(model)
    device = str(resolve_device(device))
    dtype = resolve_dtype(dtype, device)
    key = (backend, model, device, dtype, language, max_new_tokens)
    if key not in _LOADED_BACKENDS:
        logger.info("Loading the %s model %s on %s (%s).", backend, model, device, dtype)
        _LOADED_BACKENDS[key] = BACKEND_CLASSES[backend](
            model, device=device, dtype=dtype, language=language, max_new_tokens=max_new_tokens
        )
    return _LOADED_BACKENDS[key]


def load_codec_once(codec_id: str, device: str = "auto", batch_size: int = 16):
    """The XCodec2 decoder (float32), loaded once per process for each device and batch size."""
    codec_id = os.fspath(codec_id)
    device = str(resolve_device(device))
    key = (codec_id, device, batch_size)
    if key not in _LOADED_CODECS:
        try:
            _LOADED_CODECS[key] = load_codec(codec_id, device=device, batch_size=batch_size)
        except Exception as e:
            raise RuntimeError(f"Could not load the codec {codec_id!r} on {device}: {e}") from e
    return _LOADED_CODECS[key]


# ---------------------------------------------------------------------------------------------------------------------
# Components: what the reward combines. Register new ones with @register_component("name").


def reference_key(value) -> tuple | None:
    """How a reference is named in a dataset column: ("codes", hash, codes) for XCodec2 codes (a list of ints or a
    string of speech tokens), ("path", path, path) for an audio file, None where there is none."""
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip().startswith("<|"):
        value = tokens_to_codes(value)
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        return ("path", path, path) if path.strip() else None
    if isinstance(value, list | tuple | np.ndarray):
        if len(value) == 0:
            return None
        codes = np.asarray(value)
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"Reference codes must be a flat list of integers, got {str(value)[:80]}.")
        return ("codes", hashlib.blake2b(codes.astype(np.int64).tobytes(), digest_size=16).digest(), codes.tolist())
    raise ValueError(
        f"Cannot read reference audio from a {type(value).__name__}: give XCodec2 codes (a list of ints or a "
        "speech-token string) or an audio file path."
    )


class ReferenceAudio:
    """The reference waveforms of one reward call, by dataset column value, each decoded or loaded once.

    GRPO repeats each prompt's row over its group, so the same reference codes come num_generations times: they are
    keyed by a hash, and the new distinct ones a component asks for are decoded together, in one codec call.
    """

    def __init__(self, decode: Callable[[list[list[int]]], list[np.ndarray | None]] | None = None):
        self._decode = decode  # codes -> 16 kHz waveforms (the reward's codec); None: codes cannot be read
        self._waveforms: dict[tuple, np.ndarray | None] = {}

    def waveforms(self, values: Sequence) -> list[np.ndarray | None]:
        """16 kHz mono float32 waveforms of column values (None where a value is None or empty)."""
        from llasa.audio import load_audio

        keys = [reference_key(value) for value in values]
        new = {key[:2]: key[2] for key in keys if key is not None and key[:2] not in self._waveforms}
        codes = {name: payload for name, payload in new.items() if name[0] == "codes"}
        if codes:
            if self._decode is None:
                raise ValueError("Reference codes need the reward's codec to decode them; none was given.")
            self._waveforms.update(zip(codes, self._decode(list(codes.values())), strict=True))
        for name, path in new.items():
            if name[0] == "path":
                self._waveforms[name] = load_audio(path, WHISPER_SAMPLE_RATE)
        return [None if key is None else self._waveforms[key[:2]] for key in keys]

    def durations(self, values: Sequence) -> list[float | None]:
        """Seconds of each reference: counted from its codes (no decoding), or its audio file's length."""
        seconds = []
        for value in values:
            key = reference_key(value)
            if key is None:
                seconds.append(None)
            elif key[0] == "codes":
                seconds.append(len(key[2]) / TOKENS_PER_SECOND)
            else:
                seconds.append(len(self.waveforms([value])[0]) / WHISPER_SAMPLE_RATE)
        return seconds


@dataclass(frozen=True)
class ScoringBatch:
    """What a component sees: the rows of one batch that have speech to score."""

    audio: list[np.ndarray]  # generated speech, 16 kHz mono float32, full length (not cut to 30 s)
    texts: list[str]  # reference texts (the dataset's text column), never empty
    columns: dict[str, list]  # the other dataset columns for these rows, e.g. a reference duration or prompt codes
    language: str  # the config's language code
    transcripts: list[str] | None = None  # Whisper's greedy transcripts (set when a component needs ASR)
    nll: list[float] | None = None  # NLL of each reference text (set when a component needs ASR)
    sample_rate: int = WHISPER_SAMPLE_RATE  # of `audio`
    references: ReferenceAudio = field(default_factory=ReferenceAudio)  # reads reference audio named by columns

    def first_values(self, names: Sequence[str]) -> list:
        """Per row, the value of the first of the `names` columns that has one (not None, not empty); else None."""
        values = []
        for row in range(len(self.audio)):
            candidates = (self.columns[name][row] for name in names if name in self.columns)
            values.append(next((value for value in candidates if _has_value(value)), None))
        return values


def _has_value(value) -> bool:
    if value is None:
        return False
    if isinstance(value, str | list | tuple | np.ndarray):
        return len(value) > 0
    return not (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class ComponentResult:
    """A component's verdict on a batch: one score in [0, 1] or None per row, and raw metrics to log per row.

    `missing` flags the rows whose input (a dataset column) the component did not get: their score is None, the
    reward logs their share as `<component>/missing` and warns once per call.
    """

    scores: list[float | None]
    metrics: dict[str, list[float | None]] = field(default_factory=dict)
    missing: list[bool] | None = None


def build_dataclass(cls, params: dict, what: str):
    """`cls(**params)`, refusing unknown names with the list of valid ones."""
    if not isinstance(params, dict):
        raise ValueError(f"The parameters of {what} must be a JSON object, got {params!r}.")
    valid = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown} for {what}: valid ones are {valid}.")
    return cls(**params)


class RewardComponent:
    """Base of reward components: frozen dataclasses whose fields are their JSON parameters (checked in
    `__post_init__`). `score` sees one `ScoringBatch`; set `needs_asr` to receive Whisper's transcripts and NLL."""

    needs_asr: ClassVar[bool] = False

    @classmethod
    def from_params(cls, params: dict, name: str) -> "RewardComponent":
        """Build from the config's parameters (without "weight"); override to wrap another scorer."""
        return build_dataclass(cls, params, f"the component {name!r}")

    def score(self, batch: ScoringBatch) -> ComponentResult:
        raise NotImplementedError

    def input_columns(self) -> tuple[str, ...]:
        """The dataset columns the component reads (named in the warning about rows missing them)."""
        return ()


COMPONENTS: dict[str, type[RewardComponent]] = {}


def register_component(name: str):
    """Class decorator: make a `RewardComponent` available to reward configs under `name`."""

    def register(cls):
        if name in COMPONENTS:
            raise ValueError(f"A reward component named {name!r} is already registered ({COMPONENTS[name].__name__}).")
        COMPONENTS[name] = cls
        return cls

    return register


def build_component(name: str, params: dict) -> tuple[RewardComponent, float]:
    """The component `name` and its weight from the config's `{"weight": w, **params}`."""
    if name not in COMPONENTS:
        raise ValueError(f"Unknown reward component {name!r}: registered ones are {sorted(COMPONENTS)}.")
    if not isinstance(params, dict) or "weight" not in params:
        raise ValueError(f"The component {name!r} needs a JSON object with a 'weight', e.g. {{\"weight\": 1.0}}.")
    params = dict(params)
    weight = params.pop("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"The weight of the component {name!r} must be a number >= 0, got {weight!r}.")
    return COMPONENTS[name].from_params(params, name), float(weight)


def _check_alpha(alpha, what: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha of the {what} component must be a number > 0, got {alpha!r}.")


@register_component("wer")
@dataclass(frozen=True)
class ErrorRateComponent(RewardComponent):
    """R_err = 1 - tanh(alpha * ERR): ERR 0.1 -> 0.71 and ERR 0.3 -> 0.28 with alpha 3. Logs "wer" or "cer"."""

    alpha: float = 3.0  # steepness
    metric: str = "auto"  # "auto" (CER for zh/ja/ko/th..., WER otherwise), "wer" or "cer"
    needs_asr: ClassVar[bool] = True

    def __post_init__(self):
        _check_alpha(self.alpha, "wer")
        if self.metric not in ("auto", "wer", "cer"):
            raise ValueError(f"metric of the wer component must be 'auto', 'wer' or 'cer', got {self.metric!r}.")

    def score(self, batch: ScoringBatch) -> ComponentResult:
        metric = error_metric(self.metric, batch.language)
        errors = [
            error_rate(text, transcript, batch.language, metric)
            for text, transcript in zip(batch.texts, batch.transcripts, strict=True)
        ]
        scores = [None if err is None else error_reward(err, self.alpha) for err in errors]
        return ComponentResult(scores, {metric: errors})


@register_component("nll")
@dataclass(frozen=True)
class NllComponent(RewardComponent):
    """R_nll = exp(-NLL / alpha): NLL 0.3 -> 0.90 and NLL 3 -> 0.37 with alpha 3. Logs "nll"."""

    alpha: float = 3.0  # temperature, in nats
    needs_asr: ClassVar[bool] = True

    def __post_init__(self):
        _check_alpha(self.alpha, "nll")

    def score(self, batch: ScoringBatch) -> ComponentResult:
        # An infinite NLL (a reference token of probability 0) scores 0; a NaN one cannot be scored.
        scores = [None if math.isnan(nll) else nll_reward(nll, self.alpha) for nll in batch.nll]
        return ComponentResult(scores, {"nll": list(batch.nll)})


def _column_names(value, what: str, *, allow_empty: bool = True) -> tuple[str, ...]:
    """A JSON list of column names as a tuple, checked."""
    names = tuple(value) if isinstance(value, list | tuple) else None
    if names is None or not all(isinstance(name, str) and name for name in names) or not (names or allow_empty):
        need = "a list of column names" + ("" if allow_empty else " (at least one)")
        raise ValueError(f'{what} must be {need}, e.g. ["audio_code_ids", "reference_audio"], got {value!r}.')
    return names


class ScorerComponent(RewardComponent):
    """A component around one of speech_scores.py's scorers: its JSON parameters are the component's own (which
    columns to read) and the scorer's, e.g. {"weight": 0.1, "reference_columns": [...], "tolerance": 0.2}."""

    scorer_class: ClassVar[type]

    @classmethod
    def from_params(cls, params: dict, name: str) -> "ScorerComponent":
        what = f"the component {name!r}"
        if not isinstance(params, dict):
            raise ValueError(f"The parameters of {what} must be a JSON object, got {params!r}.")
        own = [f.name for f in fields(cls) if f.init and f.name != "scorer"]
        scorer_params = [f.name for f in fields(cls.scorer_class) if f.init]
        unknown = sorted(set(params) - set(own) - set(scorer_params))
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown} for {what}: valid ones are {own + scorer_params}.")
        try:
            scorer = cls.scorer_class(**{key: value for key, value in params.items() if key in scorer_params})
            return cls(scorer=scorer, **{key: value for key, value in params.items() if key in own})
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from e


@register_component("duration")
@dataclass(frozen=True)
class DurationComponent(ScorerComponent):
    """Speaking rate: `DurationScorer` (1 within `tolerance` of the expected duration, exp(-d / falloff) beyond).

    The expected duration of a row is, in order: its `duration_column` value (the reference audio's seconds), the
    length of its reference audio (the first of `reference_columns` with a value: codes are counted, not decoded),
    or its text's length over `chars_per_second`. Unset, that rate is estimated once, from the first batch that needs
    it, as the median over its rows that have both a text and a duration. Logs "duration_ratio" (clip seconds over
    expected seconds).
    """

    scorer: DurationScorer = field(default_factory=DurationScorer)
    duration_column: str | None = "duration"  # seconds of the reference audio; None: not read
    reference_columns: tuple[str, ...] = ("audio_code_ids", "reference_audio")  # where no duration is given
    scorer_class: ClassVar[type] = DurationScorer
    _estimated: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # the estimated rate

    def __post_init__(self):
        if self.duration_column is not None and not (isinstance(self.duration_column, str) and self.duration_column):
            raise ValueError(f"duration_column must be a column name or null, got {self.duration_column!r}.")
        object.__setattr__(self, "reference_columns", _column_names(self.reference_columns, "reference_columns"))

    def input_columns(self) -> tuple[str, ...]:
        return (*([self.duration_column] if self.duration_column else []), *self.reference_columns)

    def score(self, batch: ScoringBatch) -> ComponentResult:
        n = len(batch.audio)
        column = batch.columns.get(self.duration_column, [None] * n) if self.duration_column else [None] * n
        durations = [float(value) if _is_duration(value) else None for value in column]
        lacking = [row for row, duration in enumerate(durations) if duration is None]
        if lacking and self.reference_columns:
            references = batch.first_values(self.reference_columns)
            for row, seconds in zip(
                lacking, batch.references.durations([references[i] for i in lacking]), strict=True
            ):
                durations[row] = seconds
        scorer = self.scorer
        if scorer.chars_per_second is None and any(duration is None for duration in durations):
            rate = self._speaking_rate(batch.texts, durations)
            scorer = scorer if rate is None else replace(scorer, chars_per_second=rate)
        expected = scorer.expected_durations(n, durations, batch.texts)
        ratios = [
            None if seconds is None else len(wav) / batch.sample_rate / seconds
            for wav, seconds in zip(batch.audio, expected, strict=True)
        ]
        return ComponentResult(
            scorer(batch.audio, reference_durations=expected),
            {"duration_ratio": ratios},
            missing=[seconds is None for seconds in expected],
        )

    def _speaking_rate(self, texts: Sequence[str], durations: Sequence[float | None]) -> float | None:
        """chars_per_second estimated from (text, duration) pairs, once: later batches reuse it. None while no
        batch has had a duration: those rows are left unscored (counted as missing), with a warning."""
        if "chars_per_second" not in self._estimated:
            pairs = [(text, duration) for text, duration in zip(texts, durations, strict=True) if duration is not None]
            if not pairs:
                logger.warning(
                    "duration: rows without a reference duration (columns %s) and no chars_per_second to derive "
                    'one from the text are left unscored. Set "chars_per_second" in the duration component (e.g. 14 '
                    "for English read speech; `speech_scores.estimate_speaking_rate` measures a dataset's), or pass "
                    "the reference durations.",
                    list(self.input_columns()),
                )
                return None
            rate = estimate_speaking_rate(*zip(*pairs, strict=True))
            self._estimated["chars_per_second"] = rate.chars_per_second
            logger.info(
                "duration: chars_per_second not set, estimated %.2f from %d (text, duration) pairs of the batch; "
                "set it in the reward config to fix it.",
                rate.chars_per_second,
                rate.n_pairs,
            )
        return self._estimated["chars_per_second"]


def _is_duration(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@register_component("pitch")
@dataclass(frozen=True)
class PitchComponent(ScorerComponent):
    """Intonation: `PitchVariationScorer`, the F0 spread in semitones (pYIN) against the row's reference audio's
    spread (the first of `reference_columns` with a value), else against `natural_range`. Logs "pitch_semitones",
    "pitch_reference_semitones" and "pitch/no_reference" (the share scored against `natural_range`).

    The costly component: pYIN takes 0.2-0.6 s of one CPU core per 5 s clip; `num_workers` runs it in that many
    processes per training process. Each distinct reference is measured once per batch.
    """

    scorer: PitchVariationScorer = field(default_factory=PitchVariationScorer)
    reference_columns: tuple[str, ...] = ("audio_code_ids", "reference_audio")  # [] scores against natural_range
    scorer_class: ClassVar[type] = PitchVariationScorer

    def __post_init__(self):
        object.__setattr__(self, "reference_columns", _column_names(self.reference_columns, "reference_columns"))

    def input_columns(self) -> tuple[str, ...]:
        return self.reference_columns

    def score(self, batch: ScoringBatch) -> ComponentResult:
        references = batch.references.waveforms(batch.first_values(self.reference_columns))
        spreads, reference_spreads = self.scorer.measure(batch.audio, references)
        metrics = {
            "pitch_semitones": spreads,
            "pitch_reference_semitones": reference_spreads,
            "pitch/no_reference": [float(not reference) for reference in reference_spreads],
        }
        return ComponentResult(self.scorer.score_spreads(spreads, reference_spreads), metrics)


@register_component("speaker_similarity")
@dataclass(frozen=True)
class SpeakerSimilarityComponent(ScorerComponent):
    """Voice: `SpeakerSimilarityScorer`, the cosine of resemblyzer embeddings of the clip and the row's voice, the
    first of `voice_columns` with a value: the voice prompt (voice cloning) before the reference audio. A row with
    none scores None. Logs "speaker_cosine"."""

    scorer: SpeakerSimilarityScorer = field(default_factory=SpeakerSimilarityScorer)
    voice_columns: tuple[str, ...] = (VOICE_PROMPT_CODES_COLUMN, "prompt_audio", "audio_code_ids", "reference_audio")
    scorer_class: ClassVar[type] = SpeakerSimilarityScorer

    def __post_init__(self):
        columns = _column_names(self.voice_columns, "voice_columns", allow_empty=False)
        object.__setattr__(self, "voice_columns", columns)

    def input_columns(self) -> tuple[str, ...]:
        return self.voice_columns

    def score(self, batch: ScoringBatch) -> ComponentResult:
        voices = batch.first_values(self.voice_columns)
        cosines = self.scorer.similarities(batch.audio, batch.references.waveforms(voices))
        return ComponentResult(
            self.scorer.score_cosines(cosines), {"speaker_cosine": cosines}, missing=[v is None for v in voices]
        )


@register_component("quality")
@dataclass(frozen=True)
class QualityComponent(ScorerComponent):
    """Perceived quality without a reference: `DnsmosScorer` (DNSMOS P.835), scoring (MOS - 1) / 4 of `metric`.
    Logs "dnsmos_sig", "dnsmos_bak" and "dnsmos_ovrl" (1-5)."""

    scorer: DnsmosScorer = field(default_factory=DnsmosScorer)
    scorer_class: ClassVar[type] = DnsmosScorer

    def score(self, batch: ScoringBatch) -> ComponentResult:
        moses = self.scorer.mos(batch.audio)
        metrics = {f"dnsmos_{name}": [None if mos is None else mos[name] for mos in moses] for name in DNSMOS_METRICS}
        return ComponentResult(self.scorer.score_mos(moses), metrics)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class RewardConfig:
    """A reward_models/*.json file. Unknown keys are refused."""

    asr_backend: str = "openai-whisper"  # openai-whisper | transformers | faster-whisper
    asr_model: str = "large-v3"  # name, Hub id or local path, as the back end loads it
    language: str = "en"  # Whisper language code of the texts
    codec_id: str = DEFAULT_CODEC_ID  # XCodec2 checkpoint that decodes the speech tokens
    combine: str = "harmonic"  # harmonic | sum: how the component scores combine
    components: dict = field(
        default_factory=lambda: {"wer": {"weight": 0.6, "alpha": 3.0}, "nll": {"weight": 0.4, "alpha": 3.0}}
    )
    name: str = "whisper_reward"  # the reward's __name__: TRL logs rewards/<name>/mean
    text_column: str = "text"  # dataset column holding the reference text
    device: str = "auto"  # the reward models' device: auto (this process's GPU, else CPU), cpu, cuda:1...
    dtype: str = "auto"  # auto (float16 on GPU, float32 on CPU), float16, bfloat16, float32
    batch_size: int = 16  # completions decoded and recognised together: bounds memory
    max_new_tokens: int = 224  # longest transcript Whisper may write (its own default)

    def __post_init__(self):
        if self.asr_backend not in BACKENDS:
            raise ValueError(f"Unknown asr_backend {self.asr_backend!r}: use one of {list(BACKENDS)}.")
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"Unknown combine rule {self.combine!r}: use one of {list(COMBINE_RULES)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}: use one of {list(DTYPES)}.")
        for key in ("batch_size", "max_new_tokens"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        from whisper.tokenizer import LANGUAGES

        if self.language not in LANGUAGES:
            raise ValueError(
                f"Unknown language {self.language!r}: use a Whisper language code such as en, zh, ja, de."
            )
        if not isinstance(self.components, dict) or not self.components:
            raise ValueError('components must name at least one component, e.g. {"wer": {"weight": 1.0}}.')
        built = [build_component(name, params) for name, params in self.components.items()]
        if sum(weight for _, weight in built) <= 0:
            raise ValueError("At least one component needs a weight above 0.")

    @classmethod
    def from_dict(cls, values: dict) -> "RewardConfig":
        return build_dataclass(cls, values, "a reward config")

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides) -> "RewardConfig":
        """The config of a JSON file, `overrides` replacing its values; errors name the file."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"Could not read the reward config {path}: {e}") from e
        if not isinstance(values, dict):
            raise ValueError(f'The reward config {path} must hold a JSON object, e.g. {{"asr_model": "large-v3"}}.')
        try:
            return cls.from_dict({**values, **overrides})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


# ---------------------------------------------------------------------------------------------------------------------
# Completions -> codes


_ANY_TOKEN = re.compile(r"<\|[^|]*\|>")
_END_MARKERS = re.compile(re.escape(SPEECH_GENERATION_END) + "|" + re.escape(END_OF_TURN))


def completion_content(completion) -> str:
    """The text of a TRL completion: a string, or the content of a conversational completion's messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(message.get("content", "")) for message in completion if isinstance(message, dict))
    return ""


def parse_completion_text(text: str) -> ParsedSpeech:
    """Codes of the speech tokens before the end marker; other tokens and stray words are dropped and counted."""
    end = _END_MARKERS.search(text)
    head = text if end is None else text[: end.start()]
    codes = tokens_to_codes(head)
    n_tokens = len(_ANY_TOKEN.findall(head))
    n_words = len(_ANY_TOKEN.sub(" ", head).split())
    return ParsedSpeech(codes=codes, ended=end is not None, n_dropped=n_tokens - len(codes) + n_words)


def parse_completions(completions, completion_ids, vocab: SpeechVocab | None) -> list[ParsedSpeech]:
    """Speech codes of each completion: from TRL's token ids when the vocabulary is known, else from the text."""
    if completion_ids is not None and vocab is not None:
        return [vocab.parse(ids) for ids in completion_ids]
    if completions is None:
        raise ValueError(
            "The reward needs completion_ids (with the policy's speech vocabulary: load_reward(..., speech_vocab=...)) "
            "or the completions' text."
        )
    return [parse_completion_text(completion_content(completion)) for completion in completions]


# ---------------------------------------------------------------------------------------------------------------------
# The reward


@dataclass(frozen=True)
class ClipScore:
    """The reward of one clip, with what it was made of."""

    reward: float | None
    status: str  # scored | no_speech | non_finite | empty_reference
    audio_seconds: float
    transcript: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)  # raw measures: wer or cer, nll, ...
    components: dict[str, float | None] = field(default_factory=dict)  # each component's score

    def to_json(self) -> dict:
        return {
            "reward": self.reward,
            **self.metrics,
            "transcript": self.transcript,
            "components": self.components,
            "audio_seconds": round(self.audio_seconds, 3),
            "status": self.status,
        }


def _is_text(text) -> bool:
    return isinstance(text, str) and bool(text.strip())


def _mean(values) -> float | None:
    values = [float(value) for value in values if value is not None and math.isfinite(value)]
    return sum(values) / len(values) if values else None


class WhisperReward:
    """A TRL reward function: `reward(prompts=..., completions=..., completion_ids=..., **columns)` -> rewards.

    Cheap to build and to pickle: the components are checked at once, the models load on first use.
    """

    def __init__(self, config: RewardConfig, speech_vocab: SpeechVocab | None = None):
        self.config = config
        self.speech_vocab = speech_vocab
        self.__name__ = config.name
        built = [build_component(name, params) for name, params in config.components.items()]
        self.component_names = list(config.components)
        self.components = [component for component, _ in built]
        self.weights = [weight for _, weight in built]
        self.needs_asr = any(component.needs_asr for component in self.components)

    @property
    def backend(self) -> AsrBackend:
        c = self.config
        return load_backend(
            c.asr_backend,
            c.asr_model,
            device=c.device,
            dtype=c.dtype,
            language=c.language,
            max_new_tokens=c.max_new_tokens,
        )

    @property
    def codec(self):
        return load_codec_once(self.config.codec_id, self.config.device, self.config.batch_size)

    def load_models(self, codec: bool = True) -> None:
        """Load the codec (unless scoring audio only) and Whisper now, to fail before a long run rather than in it."""
        if codec:
            _ = self.codec
        if self.needs_asr:
            _ = self.backend

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float | None]:
        log_metric, log_extra = kwargs.pop("log_metric", None), kwargs.pop("log_extra", None)
        for key in ("trainer_state", "environments"):
            kwargs.pop(key, None)
        parsed = parse_completions(completions, completion_ids, self.speech_vocab)
        column = self.config.text_column
        if column not in kwargs:
            raise ValueError(
                f"The reward reads the reference text from the dataset column {column!r} (text_column), but the batch "
                f"has only the columns {sorted(kwargs)}."
            )
        texts = kwargs.pop(column)
        columns = {key: list(values) for key, values in kwargs.items() if isinstance(values, list | tuple)}
        clips = self.score_codes([speech.codes for speech in parsed], texts, columns)
        if log_metric is not None:
            for name, value in self.batch_metrics(parsed, clips).items():
                log_metric(f"{self.__name__}/{name}", value)
        if log_extra is not None:
            log_extra("transcript", [clip.transcript or "" for clip in clips])
        return [clip.reward for clip in clips]

    def batch_metrics(self, parsed: Sequence[ParsedSpeech], clips: Sequence[ClipScore]) -> dict[str, float]:
        """Means over the batch: raw measures, component scores, audio length and the share of each problem."""
        n = len(clips)
        metrics = {
            "audio_seconds": _mean(clip.audio_seconds for clip in clips if clip.audio_seconds > 0),
            "no_end_token": sum(not speech.ended for speech in parsed) / n,
            "no_speech": sum(clip.status == "no_speech" for clip in clips) / n,
            "non_finite": sum(clip.status == "non_finite" for clip in clips) / n,
            "over_30s": sum(clip.audio_seconds > WHISPER_WINDOW_SECONDS for clip in clips) / n,
            "dropped_tokens": sum(speech.n_dropped for speech in parsed) / n,
            "unscored": sum(clip.reward is None for clip in clips) / n,
        }
        for name in dict.fromkeys(key for clip in clips for key in clip.metrics):
            metrics[name] = _mean(clip.metrics.get(name) for clip in clips)
        scored = [clip for clip in clips if clip.status == "scored"]
        for name in self.component_names:
            metrics[f"reward_{name}"] = _mean(clip.components.get(name) for clip in clips)
            # Any None (input missing, a clip too short or silent to measure) leaves the row to the others.
            if scored:
                metrics[f"{name}/unscored"] = sum(clip.components.get(name) is None for clip in scored) / len(scored)
        return {name: value for name, value in metrics.items() if value is not None}

    def score_codes(
        self, codes: Sequence[Sequence[int]], texts: Sequence, columns: dict[str, list] | None = None
    ) -> list[ClipScore]:
        """Scores of speech-code sequences, decoded `batch_size` at a time in one codec call each (voice-cloning
        continuations after the prompt codes of the `prompt_code_ids` column)."""
        prompts = [codes_from(value) for value in (columns or {}).get(VOICE_PROMPT_CODES_COLUMN, [None] * len(codes))]
        return self._score_in_batches(
            len(codes), texts, columns, lambda rows: self._decode([codes[i] for i in rows], [prompts[i] for i in rows])
        )

    def score_audio(
        self, waveforms: Sequence[np.ndarray], texts: Sequence, columns: dict[str, list] | None = None
    ) -> list[ClipScore]:
        """Scores of 16 kHz mono waveforms (no codec)."""
        return self._score_in_batches(len(waveforms), texts, columns, lambda rows: [waveforms[i] for i in rows])

    def _score_in_batches(self, n: int, texts, columns, audio_of) -> list[ClipScore]:
        columns = columns or {}
        for name, values in {"texts": texts, **columns}.items():
            if len(values) != n:
                raise ValueError(f"Got {n} completions but {len(values)} values in {name!r}.")
        clips = []
        references = ReferenceAudio(self._decode)  # shared by the batches and components of this call
        for start in range(0, n, self.config.batch_size):
            rows = range(start, min(start + self.config.batch_size, n))
            chunk_columns = {name: [values[i] for i in rows] for name, values in columns.items()}
            clips += self._score_batch(audio_of(rows), [texts[i] for i in rows], chunk_columns, references)
        n_empty = sum(clip.status == "empty_reference" for clip in clips)
        if n_empty:
            logger.warning("%d of %d completions have an empty reference text: their reward is None.", n_empty, n)
        for name, component in zip(self.component_names, self.components, strict=True):
            n_missing = sum(clip.metrics.get(f"{name}/missing") == 1.0 for clip in clips)
            if n_missing:
                logger.warning(
                    "%d of %d completions have no value in any of the columns %s that the %r component reads: it "
                    "scores None there, and their reward combines the other components.",
                    n_missing,
                    n,
                    list(component.input_columns()),
                    name,
                )
        return clips

    def _decode(
        self, codes: Sequence[Sequence[int]], prompts: Sequence[list[int] | None] | None = None
    ) -> list[np.ndarray | None]:
        """One codec call for the completions that have speech (after their voice prompt's codes, if any, as
        inference decodes them); None for those without."""
        from llasa.audio import resample

        with_speech = [i for i, row in enumerate(codes) if len(row) > 0]
        audio: list[np.ndarray | None] = [None] * len(codes)
        if with_speech:
            codec = self.codec
            decoded = decode_continuations(
                codec,
                [list(codes[i]) for i in with_speech],
                [None if prompts is None else prompts[i] for i in with_speech],
            )
            for i, (_, wav) in zip(with_speech, decoded, strict=True):
                audio[i] = resample(np.asarray(wav, dtype=np.float32), codec.sample_rate, WHISPER_SAMPLE_RATE)
        return audio

    def _score_batch(
        self, audio: Sequence[np.ndarray | None], texts: Sequence, columns: dict[str, list], references: ReferenceAudio
    ) -> list:
        statuses, seconds = [], []
        for wav, text in zip(audio, texts, strict=True):
            wav = None if wav is None else np.asarray(wav, dtype=np.float32).reshape(-1)
            seconds.append(0.0 if wav is None else len(wav) / WHISPER_SAMPLE_RATE)
            if not _is_text(text):
                statuses.append("empty_reference")
            elif wav is None or len(wav) == 0:
                statuses.append("no_speech")
            elif not np.isfinite(wav).all():
                statuses.append("non_finite")
            else:
                statuses.append("scored")
        rows = [i for i, status in enumerate(statuses) if status == "scored"]
        scored = (
            dict(zip(rows, self._score_rows(audio, texts, columns, rows, references), strict=True)) if rows else {}
        )
        zero_reward = {"no_speech": 0.0, "non_finite": 0.0, "empty_reference": None}
        return [
            scored[i]
            if i in scored
            else ClipScore(reward=zero_reward[status], status=status, audio_seconds=seconds[i])
            for i, status in enumerate(statuses)
        ]

    def _score_rows(self, audio, texts, columns, rows: list[int], references: ReferenceAudio) -> list[ClipScore]:
        batch = ScoringBatch(
            audio=[np.asarray(audio[i], dtype=np.float32).reshape(-1) for i in rows],
            texts=[texts[i].strip() for i in rows],
            columns={name: [values[i] for i in rows] for name, values in columns.items()},
            language=self.config.language,
            references=references,
        )
        if self.needs_asr:
            transcripts, nll = self.backend.transcribe_and_score(batch.audio, batch.texts)
            batch = replace(batch, transcripts=transcripts, nll=nll)
        results = [component.score(batch) for component in self.components]
        clips = []
        for row in range(len(rows)):
            parts = [_clean(result.scores[row]) for result in results]
            metrics = {name: values[row] for result in results for name, values in result.metrics.items()}
            for name, result in zip(self.component_names, results, strict=True):
                if result.missing is not None:
                    metrics[f"{name}/missing"] = float(result.missing[row])
            clips.append(
                ClipScore(
                    reward=combine_scores(parts, self.weights, self.config.combine),
                    status="scored",
                    audio_seconds=len(batch.audio[row]) / WHISPER_SAMPLE_RATE,
                    transcript=None if batch.transcripts is None else batch.transcripts[row],
                    metrics=metrics,
                    components=dict(zip(self.component_names, parts, strict=True)),
                )
            )
        return clips


def _clean(score) -> float | None:
    """A component score as a float in [0, 1]; NaN counts as not scored."""
    if score is None or not math.isfinite(score):
        return None
    return min(max(float(score), 0.0), 1.0)


def load_reward(
    config: str | os.PathLike | dict | RewardConfig, *, speech_vocab: SpeechVocab | None = None, **overrides
) -> WhisperReward:
    """The reward function of a config (a JSON path, a dict or a RewardConfig).

    `overrides` replace config keys (e.g. device="cuda:1"); None values are ignored, so CLI flags can be passed as
    they are. `speech_vocab` (`SpeechVocab.from_tokenizer(policy_tokenizer)`) lets the reward read TRL's
    completion_ids; without it the codes are read from the completions' text.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if isinstance(config, RewardConfig):
        config = {f.name: getattr(config, f.name) for f in fields(RewardConfig)}
    if isinstance(config, dict):
        checked = RewardConfig.from_dict({**config, **overrides})
    else:
        checked = RewardConfig.from_json(config, **overrides)
    return WhisperReward(checked, speech_vocab=speech_vocab)


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number} is not valid JSON: {e}") from e
    return rows


def codes_of(value, where: str) -> list[int]:
    """Codes from a speech-token string (end marker allowed) or a list of ints."""
    if isinstance(value, str):
        return parse_completion_text(value).codes
    if isinstance(value, list) and all(isinstance(code, int) and not isinstance(code, bool) for code in value):
        if not all(0 <= code < CODEBOOK_SIZE for code in value):
            raise ValueError(f"{where}: codes must lie in XCodec2's codebook [0, {CODEBOOK_SIZE - 1}].")
        return value
    raise ValueError(f"{where}: 'codes' must be a speech-token string or a list of integer codes.")


def rows_from_args(args, parser) -> tuple[list, list, dict, str]:
    """(audio paths or code lists, texts, extra columns, "audio" | "codes") from the command line."""
    if args.audio is not None:
        if args.text is None or len(args.text) != len(args.audio):
            parser.error("--audio needs one --text per file.")
        columns = {}
        if args.reference_audio is not None:
            if len(args.reference_audio) not in (1, len(args.audio)):
                parser.error("--reference_audio takes one file for all --audio files, or one per file.")
            columns["reference_audio"] = args.reference_audio * (len(args.audio) // len(args.reference_audio))
        return args.audio, args.text, columns, "audio"
    path = args.input_file if args.input_file is not None else args.codes_file
    key = "audio" if args.input_file is not None else "codes"
    rows = read_jsonl(path)
    for number, row in enumerate(rows, 1):
        if key not in row or "text" not in row:
            parser.error(f"{path}:{number} needs the keys {key!r} and 'text'.")
    folder = Path(path).parent  # relative audio paths are read from the list's folder, as inference.py reads them
    items = [
        str(folder / row[key]) if key == "audio" else codes_of(row[key], f"{path}:{n}")
        for n, row in enumerate(rows, 1)
    ]
    extra = sorted({name for row in rows for name in row} - {key, "text"})
    columns = {name: [row.get(name) for row in rows] for name in extra}
    for name in {"reference_audio", "prompt_audio"} & set(columns):
        columns[name] = [None if value is None else str(folder / value) for value in columns[name]]
    return items, [row["text"] for row in rows], columns, key


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward_config", default="reward_models/wer_nll.json", help="reward config JSON")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--audio", nargs="+", help="audio files to score")
    inputs.add_argument("--input_file", help='JSONL of {"audio": path, "text": reference}')
    inputs.add_argument("--codes_file", help='JSONL of {"codes": "<|s_1|>..." or [1, ...], "text": reference}')
    parser.add_argument("--text", nargs="+", help="reference texts, one per --audio file")
    parser.add_argument(
        "--reference_audio",
        nargs="+",
        help="recordings of the reference texts (one, or one per --audio file): the expected duration, pitch spread "
        "and voice of the duration, pitch and speaker_similarity components. JSONL files: a 'reference_audio' key",
    )
    parser.add_argument("--asr_backend", choices=BACKENDS, help="overrides the config")
    parser.add_argument("--asr_model", help="overrides the config")
    parser.add_argument("--language", help="overrides the config")
    parser.add_argument("--codec_id", help="overrides the config")
    parser.add_argument("--combine", choices=COMBINE_RULES, help="overrides the config")
    parser.add_argument("--device", help="overrides the config: auto, cpu, cuda, cuda:1...")
    parser.add_argument("--dtype", choices=DTYPES, help="overrides the config")
    parser.add_argument("--batch_size", type=int, help="overrides the config")
    args = parser.parse_args()
    if args.text is not None and args.audio is None:
        parser.error("--text goes with --audio; JSONL files carry their own texts.")
    if args.reference_audio is not None and args.audio is None:
        parser.error("--reference_audio goes with --audio; JSONL files carry a 'reference_audio' key per line.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    overrides = {key: getattr(args, key) for key in ("asr_backend", "asr_model", "language", "codec_id", "combine")}
    overrides.update(device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    reward = load_reward(args.reward_config, **overrides)
    try:
        items, texts, columns, kind = rows_from_args(args, parser)
    except (OSError, ValueError) as e:  # an unreadable list, a bad line
        parser.error(str(e))
    if kind == "audio":
        from llasa.audio import load_audio

        clips = reward.score_audio([load_audio(path, WHISPER_SAMPLE_RATE) for path in items], texts, columns)
    else:
        clips = reward.score_codes(items, texts, columns)
    for index, (item, clip) in enumerate(zip(items, clips, strict=True)):
        source = {"audio": item} if kind == "audio" else {"index": index}
        print(json.dumps({**source, **clip.to_json()}, ensure_ascii=False))


if __name__ == "__main__":
    main()
