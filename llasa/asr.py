"""Whisper as the reward's ear: three back ends (openai-whisper, transformers, faster-whisper) behind one interface,
and FunASR's Paraformer (transcripts only, for Seed-TTS-eval's Chinese evaluation).

For a batch of 16 kHz waveforms and reference texts, `transcribe_and_score` returns the greedy transcripts and each
text's teacher-forced NLL from one encoder pass. Each back end computes its input features as its own transcription
does: openai-whisper and faster-whisper zero-pad the log-mel of the clip to 3000 frames, transformers pads the audio
to 30 s (what models fine-tuned with it saw), so the same weights give the same NLL through the first two and a close
one through the third.

NLL: the reference text (raw, with a leading space as Whisper writes it, except in languages without spaces) is
teacher-forced through the decoder after the prefix <|startoftranscript|>[<|lang|><|transcribe|>]<|notimestamps|>.
Each text token's probability is renormalised over the text vocabulary (ids below <|endoftext|>) and EOT is not
scored: this is what CTranslate2's `align` returns and cannot be changed, so all three back ends compute it that way
and agree on the same weights. A reference longer than the decoder's context is cut to fit.

Loop guard: a greedy transcript that repeats itself to the token limit ("8, 8, 8, ...": zlib compression ratio above
2.4, `llasa.text.is_repetition_loop`, Whisper's own test) is decoded again, for those clips only, greedily with a
repetition penalty of 1.3 (`LOOP_REPETITION_PENALTY`) on the tokens already written: deterministic, and the same
rule in the three back ends (CTranslate2's and transformers' `repetition_penalty`; a logit filter of the same
arithmetic in openai-whisper, whose DecodingOptions has none). Whisper's own transcribe samples at rising
temperatures instead, which ends a loop only some of the time and makes the reward random; beam search keeps
looping. The retry's transcript is kept unless it loops too (then the shorter of the two). The NLL is
teacher-forced and unaffected. `transcribe` returns `Transcripts`, a list of strings that also says which clips
fell back.
"""

import copy
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from llasa.audio import SAMPLE_RATE
from llasa.device import dtype_name, outside_zero3, release_cached_memory, resolve_device, resolve_dtype
from llasa.model_cache import load_once
from llasa.text import NO_SPACE_LANGUAGES, is_repetition_loop

logger = logging.getLogger(__name__)

WHISPER_WINDOW_SECONDS = 30  # Whisper pads or cuts its input to 30 s
WHISPER_WINDOW_SAMPLES = SAMPLE_RATE * WHISPER_WINDOW_SECONDS
WHISPER_HOP = 160  # mel frame hop in samples: 3000 frames per window
WHISPER_N_FFT = 400  # STFT window: zeros padded beyond it change none of the clip's frames
WHISPER_FRAMES = WHISPER_WINDOW_SAMPLES // WHISPER_HOP
WHISPER_TEXT_CONTEXT = 448  # decoder positions of every Whisper model (prefix + text)
DEFAULT_MAX_NEW_TOKENS = 224  # longest transcript Whisper may write (its own default)

BACKENDS = ("openai-whisper", "transformers", "faster-whisper", "paraformer")
PARAFORMER_INSTALL = "pip install funasr modelscope"
# Penalty on the logits of tokens already written when a greedy transcript looped: ends Whisper base's "8, 8, 8, ..."
# on a slow Spanish counting, where beam search (5 beams) still loops.
LOOP_REPETITION_PENALTY = 1.3


def text_prefix(text: str, language: str) -> str:
    """The reference as Whisper writes a transcript: after a space, except in languages without spaces."""
    text = text.strip()
    return text if language in NO_SPACE_LANGUAGES else " " + text


def first_window(waveform: np.ndarray) -> np.ndarray:
    """The first 30 s: all Whisper hears of a longer clip."""
    return np.ascontiguousarray(waveform[:WHISPER_WINDOW_SAMPLES], dtype=np.float32)


def text_nlls(logits, start: int, targets: list[list[int]], eot: int) -> list[float]:
    """Each row's -mean log p(target) over the text vocabulary (ids below EOT), from the logits at positions
    `start`, `start + 1`, ... that predict its targets; one transfer to the host for the whole batch."""
    width = max(len(tokens) for tokens in targets)
    padded = torch.tensor([tokens + [0] * (width - len(tokens)) for tokens in targets], device=logits.device)
    counted = torch.tensor([[i < len(tokens) for i in range(width)] for tokens in targets], device=logits.device)
    text_logits = logits[:, start : start + width, :eot].float()
    log_probs = text_logits.gather(-1, padded[..., None])[..., 0] - torch.logsumexp(text_logits, dim=-1)
    return (-(log_probs * counted).sum(1) / counted.sum(1)).tolist()


def check_language(model_name: str, multilingual: bool, language: str) -> None:
    if not multilingual and language != "en":
        raise ValueError(
            f"The Whisper model {model_name!r} is English-only and cannot transcribe {language!r}: set language to "
            "'en' or use a multilingual model (e.g. large-v3)."
        )


class Transcripts(list):
    """Transcripts (a list of str) and, per clip, whether its greedy transcript looped and was decoded again."""

    def __init__(self, texts: Sequence[str], fell_back: Sequence[bool]):
        super().__init__(texts)
        self.fell_back = list(fell_back)

    @property
    def n_fallbacks(self) -> int:
        return sum(self.fell_back)


def kept_transcript(greedy: str, retry: str) -> str:
    """The retry of a looping transcript, unless it loops too: then the shorter of the two."""
    if not is_repetition_loop(retry):
        return retry
    return min(greedy, retry, key=len)


class AsrBackend:
    """One Whisper model on one device. Subclasses implement `encode`, `decode`, `select` and `nll`."""

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

    def transcribe(self, features, *, loop_fallback: bool = True) -> Transcripts:
        """Greedy transcripts from the encoder output; those that loop are decoded again with a repetition penalty
        (unless `loop_fallback` is False: Whisper's raw greedy output)."""
        texts = self.decode(features)
        loops = [row for row, text in enumerate(texts) if is_repetition_loop(text)] if loop_fallback else []
        fell_back = [False] * len(texts)
        if loops:
            retries = self.decode(self.select(features, loops), repetition_penalty=LOOP_REPETITION_PENALTY)
            for row, retry in zip(loops, retries, strict=True):
                texts[row], fell_back[row] = kept_transcript(texts[row], retry), True
            logger.debug("%d of %d transcripts looped and were decoded again.", len(loops), len(texts))
        return Transcripts(texts, fell_back)

    def decode(self, features, repetition_penalty: float = 1.0) -> list[str]:
        """Greedy transcripts from the encoder output, the logits of tokens already written divided by
        `repetition_penalty` (multiplied where negative)."""
        raise NotImplementedError

    def select(self, features, rows: list[int]):
        """The encoder output of some clips of the batch."""
        raise NotImplementedError

    def nll(self, features, texts: Sequence[str]) -> list[float]:
        """Teacher-forced NLL of each reference text from the encoder output."""
        raise NotImplementedError

    def transcribe_and_score(
        self, waveforms: Sequence[np.ndarray], texts: Sequence[str]
    ) -> tuple[Transcripts, list[float]]:
        """Transcripts (with the clips that fell back after a loop) and NLLs of a batch, with one encoder pass
        shared by both."""

        with torch.inference_mode():
            features = self.encode(waveforms)
            return self.transcribe(features), self.nll(features, texts)

    def recognize(self, waveforms: Sequence[np.ndarray]) -> Transcripts:
        """Transcripts of a batch of 16 kHz waveforms, without NLL (e.g. of the rows' reference recordings)."""
        with torch.inference_mode():
            return self.transcribe(self.encode(waveforms))

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
        import whisper

        if self.dtype == "bfloat16":
            raise ValueError("openai-whisper decodes in float16 or float32 only: set dtype to 'float16' or 'float32'.")
        self.torch_dtype = getattr(torch, self.dtype)
        # Converted on the CPU, then moved: large-v3 in float32 on the GPU first would take 6 GB for a moment.
        self.model = whisper.load_model(self.model_name, device="cpu").eval()
        if self.dtype == "float16":
            # Half-precision weights, but LayerNorm's stay float32: whisper computes LayerNorm in float32 anyway, and
            # otherwise casts every weight to the input's dtype at every call.
            self.model.half()
            for module in self.model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.float()
        self.model.to(self.device)
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

    def select(self, features, rows):
        return features[rows]

    def decode(self, features, repetition_penalty: float = 1.0) -> list[str]:
        import whisper

        options = whisper.DecodingOptions(
            task="transcribe",
            language=self.language,  # "en" for English-only models; None would ask for language detection
            without_timestamps=True,
            sample_len=self.max_new_tokens,
            fp16=self.dtype == "float16",
        )
        task = whisper.decoding.DecodingTask(self.model, options)  # what whisper.decode runs
        if repetition_penalty != 1.0:
            task.logit_filters.append(_RepetitionPenalty(repetition_penalty))
        results = task.run(features)
        # Special tokens a model may emit are not text (transformers and faster-whisper drop them too).
        return [
            self.tokenizer.decode([t for t in result.tokens if t < self.tokenizer.eot]).strip() for result in results
        ]

    def nll(self, features, texts) -> list[float]:

        targets = self._text_tokens(texts)
        width = len(self.prefix) + max(len(tokens) for tokens in targets)
        # Right padding: the decoder is causal, so padding never changes the logits of the real tokens.
        rows = [(self.prefix + tokens + [self.tokenizer.eot] * width)[:width] for tokens in targets]
        logits = self.model.logits(torch.tensor(rows, device=features.device), features)
        start = len(self.prefix) - 1  # the logits at position i predict token i + 1
        return text_nlls(logits, start, targets, self.tokenizer.eot)


class TransformersBackend(AsrBackend):
    """transformers: the encoder once, then `generate(encoder_outputs=...)` and a decoder forward for the NLL."""

    name = "transformers"

    def _load(self) -> None:
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        self.torch_dtype = getattr(torch, self.dtype)
        # Loaded on the CPU in the target dtype, then moved: the GPU never holds a float32 copy.
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
        # The spectrogram is computed on the model's device (transformers' default is the CPU).
        inputs = extractor(
            [first_window(wav) for wav in waveforms],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            device=str(self.device),
        ).input_features
        return self.model.get_encoder()(input_features=inputs.to(self.device, self.torch_dtype))

    def select(self, features, rows):
        from transformers.modeling_outputs import BaseModelOutput

        return BaseModelOutput(last_hidden_state=features.last_hidden_state[rows])

    def decode(self, features, repetition_penalty: float = 1.0) -> list[str]:
        language = {"language": self.language, "task": "transcribe"} if self.multilingual else {}
        config = self.generation_config
        if repetition_penalty != 1.0:  # a copy: transformers warns when generate gets both a config and options
            config = copy.deepcopy(config)
            config.repetition_penalty = repetition_penalty
        sequences = self.model.generate(
            encoder_outputs=features, generation_config=config, return_timestamps=False, **language
        )
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]

    def nll(self, features, texts) -> list[float]:

        targets = self._text_tokens(texts)
        width = len(self.prefix) + max(len(tokens) for tokens in targets)
        # Right padding: the decoder is causal, so padding never changes the logits of the real tokens.
        rows = [(self.prefix + tokens + [self.eot] * width)[:width] for tokens in targets]
        logits = self.model(
            encoder_outputs=features, decoder_input_ids=torch.tensor(rows, device=self.device), use_cache=False
        ).logits
        return text_nlls(logits, len(self.prefix) - 1, targets, self.eot)


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

    def select(self, features, rows):
        import ctranslate2

        output = features.output
        if output.device == "cuda":
            chosen = torch.as_tensor(output, device=f"cuda:{output.device_index}")[rows].contiguous()
        else:
            chosen = np.ascontiguousarray(np.asarray(output)[rows])
        return _EncodedAudio(ctranslate2.StorageView.from_array(chosen), [features.n_samples[row] for row in rows])

    def decode(self, features, repetition_penalty: float = 1.0) -> list[str]:
        results = self.model.generate(
            features.output,
            [self.prefix] * len(features.n_samples),
            beam_size=1,
            max_length=len(self.prefix) + self.max_new_tokens,
            suppress_blank=True,
            suppress_tokens=[-1],  # the non-speech symbols, as openai-whisper's default
            repetition_penalty=repetition_penalty,
        )
        return [self.tokenizer.decode(result.sequences_ids[0]).strip() for result in results]

    def nll(self, features, texts) -> list[float]:
        targets = self._text_tokens(texts)
        frames = [max(n // WHISPER_HOP, 1) for n in features.n_samples]  # used for the alignment, not the probs
        results = self.model.align(features.output, self.start_sequence, targets, frames)
        return [-float(np.mean(np.log(result.text_token_probs))) for result in results]


class _RepetitionPenalty:
    """openai-whisper logit filter: the logit of each token already in the sequence (prefix included) divided by
    `penalty` where positive, multiplied where negative, as transformers' and CTranslate2's repetition_penalty."""

    def __init__(self, penalty: float):
        self.penalty = penalty

    def apply(self, logits, tokens) -> None:
        seen = torch.gather(logits, 1, tokens)
        logits.scatter_(1, tokens, torch.where(seen > 0, seen / self.penalty, seen * self.penalty))


class ParaformerBackend(AsrBackend):
    """FunASR's Paraformer ("paraformer-zh": Seed-TTS-eval's ASR for Chinese), for evaluation: transcripts only.

    Optional (`pip install funasr modelscope`). Paraformer is non-autoregressive: it writes every token at once, so
    it cannot loop, and it has no decoder to teacher-force, so its NLL is NaN (a reward config refuses the nll
    component with it). Its Chinese transcripts come with a space between characters, which CER ignores.
    """

    name = "paraformer"

    def _load(self) -> None:
        try:
            from funasr import AutoModel
        except ImportError as e:
            raise ImportError(f"the paraformer back end needs FunASR: {PARAFORMER_INSTALL}") from e
        self.model = AutoModel(model=self.model_name, device=self.device, disable_update=True)
        self.prefix = []

    def encode(self, waveforms):
        return [np.ascontiguousarray(wav, dtype=np.float32) for wav in waveforms]  # FunASR reads the waveforms

    def select(self, features, rows):
        return [features[row] for row in rows]

    def decode(self, features, repetition_penalty: float = 1.0) -> list[str]:
        results = self.model.generate(input=list(features), batch_size=len(features))
        return [result["text"].strip() for result in results]

    def transcribe(self, features, *, loop_fallback: bool = True) -> Transcripts:
        return Transcripts(self.decode(features), [False] * len(features))

    def nll(self, features, texts) -> list[float]:
        return [math.nan] * len(texts)


@dataclass(frozen=True)
class _EncodedAudio:
    output: Any  # CTranslate2 StorageView on the model's device
    n_samples: list[int]  # real (unpadded) samples per clip, at most 30 s


BACKEND_CLASSES = {
    backend.name: backend
    for backend in (OpenAIWhisperBackend, TransformersBackend, FasterWhisperBackend, ParaformerBackend)
}


def load_backend(
    backend: str,
    model: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    language: str = "en",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> AsrBackend:
    """The ASR back end, loaded once per process for each (back end, model, device, dtype, language, length)."""
    if backend not in BACKEND_CLASSES:
        raise ValueError(f"Unknown ASR back end {backend!r}: use one of {list(BACKEND_CLASSES)}.")
    model = os.fspath(model)
    device = str(resolve_device(device))
    # float16 on a GPU by default: openai-whisper decodes in float16 or float32 only.
    dtype = dtype_name(resolve_dtype(dtype, device, gpu_default=torch.float16, half_on_cpu=True))
    return _load_backend(backend, model, device, dtype, language, max_new_tokens)


@load_once
def _load_backend(backend: str, model: str, device: str, dtype: str, language: str, max_new_tokens: int) -> AsrBackend:
    logger.info("Loading the %s model %s on %s (%s).", backend, model, device, dtype)
    with outside_zero3():
        loaded = BACKEND_CLASSES[backend](
            model, device=device, dtype=dtype, language=language, max_new_tokens=max_new_tokens
        )
    release_cached_memory(device)
    return loaded
