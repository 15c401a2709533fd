"""The reward TRL calls: a config of weighted components (`RewardConfig`, a reward_models/*.json file) and the
callable that scores completions with them (`SpeechReward`), built by `load_reward`.

One pass per batch: completion ids -> codes -> one batched codec decode -> one Whisper encoder pass whose output
feeds both the greedy transcription and the teacher-forced NLL -> each component's score -> the weighted harmonic
mean (or the weighted mean, "combine": "sum"; or "gated": intelligibility alone, scaled, above an ERR threshold).
`load_reward_functions` hands TRL one function per component instead ("per_component": true), sharing that pass.
`batch_size` completions go through at a time, which bounds memory. Models load lazily, once per process, on the
reward's own `device`.

Edge cases, none of which raises during training: no speech tokens (or empty audio) scores 0.0 (`no_speech`);
non-speech tokens before the end marker are dropped and counted (`dropped_tokens`); audio that is not finite scores
0.0 (`non_finite`); audio longer than Whisper's 30 s window is heard for its first 30 s, and the ERR and NLL against
the full reference penalise what was cut (`over_30s`); a greedy transcript that loops to Whisper's token limit is
decoded again with a repetition penalty (`asr_fallback`, llasa.asr); an empty reference text gives None, with a
warning. With "vad" on (the default), silero-vad hears each clip first: one in which it finds no speech (silence,
hum, noise, which Whisper may still transcribe as "you") scores 0.0 as `no_speech` too.
"""

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path

import numpy as np

from llasa.asr import BACKENDS, DEFAULT_MAX_NEW_TOKENS, WHISPER_WINDOW_SECONDS, AsrBackend, load_backend
from llasa.audio import SAMPLE_RATE, resample
from llasa.codec import DEFAULT_BATCH_SIZE, DEFAULT_CODEC_ID, decode_speech, load_codec_once
from llasa.device import DTYPES
from llasa.format import (
    TEXT_COLUMN,
    VOICE_CODES_COLUMN,
    ParsedSpeech,
    SpeechVocab,
    codes_from,
    parse_completions,
)
from llasa.numbers import is_count
from llasa.rewards.components import (
    COMBINE_RULES,
    Gate,
    ReferenceAudio,
    ScoringBatch,
    build_component,
    build_dataclass,
    combine_scores,
)
from llasa.rewards.intelligibility import counted_error
from llasa.vad import detect_speech

logger = logging.getLogger(__name__)

GATE_COMPONENT = "wer"  # the component whose raw ERR (WER or CER) the "gated" rule reads


@dataclass(frozen=True)
class RewardConfig:
    """A reward_models/*.json file. Unknown keys are refused."""

    asr_backend: str = "openai-whisper"  # openai-whisper | transformers | faster-whisper | paraformer (wer only)
    asr_model: str = "large-v3"  # name, Hub id or local path, as the back end loads it
    language: str = "en"  # Whisper language code of the texts
    codec_id: str = DEFAULT_CODEC_ID  # XCodec2 checkpoint that decodes the speech tokens
    combine: str = "harmonic"  # harmonic | sum | gated: how the component scores combine
    gate: dict = field(default_factory=dict)  # "gated" only: {"threshold": ERR, "scale": s, "components": [...]}
    per_component: bool = False  # load_reward_functions: one TRL reward function per component (GDPO)
    components: dict = field(
        default_factory=lambda: {"wer": {"weight": 0.6, "alpha": 3.0}, "nll": {"weight": 0.4, "alpha": 3.0}}
    )
    name: str = "whisper_reward"  # the reward's __name__: TRL logs rewards/<name>/mean
    text_column: str = TEXT_COLUMN  # dataset column holding the reference text
    device: str = "auto"  # the reward models' device: auto (this process's GPU, else CPU), cpu, cuda:1...
    dtype: str = "auto"  # auto (float16 on GPU, float32 on CPU), float16, bfloat16, float32
    batch_size: int = DEFAULT_BATCH_SIZE  # completions decoded and recognised together: bounds memory
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # longest transcript Whisper may write
    vad: bool = True  # silero-vad first: a clip without detected speech scores 0 (no_speech)

    def __post_init__(self):
        if self.asr_backend not in BACKENDS:
            raise ValueError(f"Unknown asr_backend {self.asr_backend!r}: use one of {list(BACKENDS)}.")
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"Unknown combine rule {self.combine!r}: use one of {list(COMBINE_RULES)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}: use one of {list(DTYPES)}.")
        for key in ("batch_size", "max_new_tokens"):
            value = getattr(self, key)
            if not is_count(value) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        from transformers.models.whisper.tokenization_whisper import LANGUAGES  # every back end's language codes

        if self.language not in LANGUAGES:
            raise ValueError(
                f"Unknown language {self.language!r}: use a Whisper language code such as en, zh, ja, de."
            )
        if not isinstance(self.components, dict) or not self.components:
            raise ValueError('components must name at least one component, e.g. {"wer": {"weight": 1.0}}.')
        built = [build_component(name, params) for name, params in self.components.items()]
        if sum(weight for _, weight in built) <= 0:
            raise ValueError("At least one component needs a weight above 0.")
        self._check_gate()
        for key in ("per_component", "vad"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false, got {getattr(self, key)!r}.")
        if self.per_component and self.combine == "gated":
            raise ValueError(
                'per_component hands each component to TRL, which sums them: the "gated" rule cannot apply. Use '
                '"combine": "harmonic" (unused) with per_component, or drop per_component to keep the gate.'
            )
        if self.asr_backend == "paraformer" and "nll" in self.components:
            raise ValueError(
                "The paraformer back end gives transcripts only (no decoder to teacher-force): drop the nll component "
                "or use a Whisper back end."
            )

    def _check_gate(self) -> None:
        gate = build_dataclass(Gate, self.gate, "the gate")  # checked under any rule: a --combine override keeps it
        if self.combine != "gated":
            return
        if GATE_COMPONENT not in self.components:
            raise ValueError(f'"combine": "gated" needs the {GATE_COMPONENT!r} component: its ERR opens the gate.')
        if not set(gate.components) & set(self.components):
            raise ValueError(f"None of the gate's components {list(gate.components)} is in the config.")

    def gate_rule(self) -> Gate | None:
        """The "gated" rule's parameters (None for the other rules)."""
        return build_dataclass(Gate, self.gate, "the gate") if self.combine == "gated" else None

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


# The config keys a command line may override, as the option class of reward_whisper.py's flags.
OVERRIDABLE = ("asr_backend", "asr_model", "language", "codec_id", "combine", "device", "dtype", "batch_size")
_CHOICES = {"asr_backend": BACKENDS, "combine": COMBINE_RULES, "dtype": DTYPES}
RewardOverrides = make_dataclass(
    "RewardOverrides",
    [
        (
            f.name,
            f.type | None,
            field(
                default=None,
                metadata={
                    "help": "Overrides the config.",
                    **({"choices": _CHOICES[f.name]} if f.name in _CHOICES else {}),
                },
            ),
        )
        for f in fields(RewardConfig)
        if f.name in OVERRIDABLE
    ],
    frozen=True,
    namespace={"__doc__": "Reward config values that replace the file's; None keeps the file's."},
)


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


class SpeechReward:
    """A TRL reward function: `reward(prompts=..., completions=..., completion_ids=..., **columns)` -> rewards.
    Whisper (or Paraformer) hears the intelligibility components; the others read the audio (scores.py's scorers,
    the preference model).

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
        self.gate = config.gate_rule()

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
        """Load the codec (unless scoring audio only), Whisper and the components' models now: a model that cannot
        load fails before a long run rather than in it, and none loads later inside ZeRO-3 or on one process alone."""
        if codec:
            _ = self.codec
        if self.needs_asr:
            _ = self.backend
        for component in self.components:
            component.load_models()

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float | None]:
        return [clip.reward for clip in self.score_completions(completions, completion_ids, **kwargs)]

    def score_completions(self, completions=None, completion_ids=None, **kwargs) -> list["ClipScore"]:
        """Every clip's score (reward, components, transcript) for TRL's call arguments, its metrics logged."""
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
        return clips

    def batch_metrics(self, parsed: Sequence[ParsedSpeech], clips: Sequence[ClipScore]) -> dict[str, float]:
        """Means over the batch: raw measures, component scores, audio length and the share of each problem.

        `asr_fallback` is the share of the clips Whisper heard whose greedy transcript looped and was decoded again
        (llasa.asr's loop guard): a rising share means the policy's speech drives Whisper into loops."""
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
        prompts = [codes_from(value) for value in (columns or {}).get(VOICE_CODES_COLUMN, [None] * len(codes))]
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
        codec = self.codec
        return [
            None if pair is None else resample(pair[1], codec.sample_rate, SAMPLE_RATE)
            for pair in decode_speech(codec, codes, prompts)
        ]

    def _score_batch(
        self, audio: Sequence[np.ndarray | None], texts: Sequence, columns: dict[str, list], references: ReferenceAudio
    ) -> list:
        statuses, seconds = [], []
        for wav, text in zip(audio, texts, strict=True):
            wav = None if wav is None else np.asarray(wav, dtype=np.float32).reshape(-1)
            seconds.append(0.0 if wav is None else len(wav) / SAMPLE_RATE)
            if not _is_text(text):
                statuses.append("empty_reference")
            elif wav is None or len(wav) == 0:
                statuses.append("no_speech")
            elif not np.isfinite(wav).all():
                statuses.append("non_finite")
            else:
                statuses.append("scored")
        rows = [i for i, status in enumerate(statuses) if status == "scored"]
        speech = None
        if self.config.vad and rows:
            found = dict(zip(rows, detect_speech([np.asarray(audio[i]).reshape(-1) for i in rows]), strict=True))
            for i in rows:
                if not found[i].has_speech:
                    statuses[i] = "no_speech"
            rows = [i for i in rows if statuses[i] == "scored"]
            speech = [found[i] for i in rows]
        scored = (
            dict(zip(rows, self._score_rows(audio, texts, columns, rows, references, speech), strict=True))
            if rows
            else {}
        )
        zero_reward = {"no_speech": 0.0, "non_finite": 0.0, "empty_reference": None}
        return [
            scored[i]
            if i in scored
            else ClipScore(reward=zero_reward[status], status=status, audio_seconds=seconds[i])
            for i, status in enumerate(statuses)
        ]

    def _score_rows(
        self, audio, texts, columns, rows: list[int], references: ReferenceAudio, speech: list | None
    ) -> list[ClipScore]:
        batch = ScoringBatch(
            audio=[np.asarray(audio[i], dtype=np.float32).reshape(-1) for i in rows],
            texts=[texts[i].strip() for i in rows],
            columns={name: [values[i] for i in rows] for name, values in columns.items()},
            language=self.config.language,
            references=references,
            speech=speech,
        )
        fell_back = None
        if self.needs_asr:
            transcripts, nll = self.backend.transcribe_and_score(batch.audio, batch.texts)
            batch = replace(batch, transcripts=transcripts, nll=nll, recognize=self.backend.recognize)
            fell_back = transcripts.fell_back
        results = [component.score(batch) for component in self.components]
        clips = []
        for row in range(len(rows)):
            parts = [_clean(result.scores[row]) for result in results]
            metrics = {name: values[row] for result in results for name, values in result.metrics.items()}
            if fell_back is not None:
                metrics["asr_fallback"] = float(fell_back[row])  # its greedy transcript looped: decoded again
            for name, result in zip(self.component_names, results, strict=True):
                if result.missing is not None:
                    metrics[f"{name}/missing"] = float(result.missing[row])
            clips.append(
                ClipScore(
                    reward=combine_scores(
                        parts,
                        self.weights,
                        self.config.combine,
                        names=self.component_names,
                        error=counted_error(metrics) if self.gate is not None else None,
                        gate=self.gate,
                    ),
                    status="scored",
                    audio_seconds=len(batch.audio[row]) / SAMPLE_RATE,
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


WhisperReward = SpeechReward  # its name while Whisper was its only judge, kept for users' imports


def check_reward_config(path, flag: str = "--reward_config", **overrides) -> RewardConfig:
    """A reward config file checked before any model loads: its values, and the local model paths it names."""
    from llasa.checks import check_exists, check_input_file

    check_input_file(path, flag)
    config = RewardConfig.from_json(path, **{key: value for key, value in overrides.items() if value is not None})
    for key in ("asr_model", "codec_id"):  # a local path that is not there is no hub id to look up later
        try:
            check_exists(str(getattr(config, key)), key)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{path}: {e}") from None
    return config


def load_reward(
    config: str | os.PathLike | dict | RewardConfig, *, speech_vocab: SpeechVocab | None = None, **overrides
) -> SpeechReward:
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
    return SpeechReward(checked, speech_vocab=speech_vocab)


def codec_of(codec_id: str | None, reward_config: str | os.PathLike | dict | None) -> str:
    """The codec a command uses: the one given, else the reward config's `codec_id` (the codec its scores assume),
    else the default; the choice is logged when not given."""
    if codec_id is not None:
        return codec_id
    if reward_config is None:
        chosen, source = DEFAULT_CODEC_ID, "the default"
    else:
        config = reward_config if isinstance(reward_config, dict) else None
        checked = RewardConfig.from_dict(config) if config is not None else RewardConfig.from_json(reward_config)
        chosen, source = checked.codec_id, "the reward config's codec_id"
    logger.info("Codec: %s (%s; --codec_id chooses another).", chosen, source)
    return chosen


class ComponentScores:
    """The scores of one reward config shared by its per-component reward functions: the first function TRL calls
    for a batch scores every component (one codec decode, one Whisper pass), the others read the cache.

    The cache is keyed by the batch's completion ids (or texts) and dataset columns: scoring is deterministic, so an
    identical batch has identical scores.
    """

    def __init__(self, reward: SpeechReward):
        self.reward = reward
        self._key = None
        self._clips: list[ClipScore] = []

    def clips(self, completions, completion_ids, kwargs: dict) -> list[ClipScore]:
        key = _batch_key(completions, completion_ids, kwargs)
        if key != self._key:
            self._clips = self.reward.score_completions(completions, completion_ids, **kwargs)
            self._key = key
        return self._clips


def _batch_key(completions, completion_ids, kwargs: dict) -> int:
    ids = completion_ids if completion_ids is not None else completions
    columns = sorted((name, values) for name, values in kwargs.items() if isinstance(values, list | tuple))
    return hash(repr((ids, columns)))


class ComponentReward:
    """One component's score as its own TRL reward function, named after the component (TRL logs
    rewards/<component>/mean), so that TRL can normalise each objective by itself
    (`multi_objective_aggregation: normalize_then_sum`). A clip without speech scores 0.0 in every component."""

    def __init__(self, shared: ComponentScores, name: str):
        self.shared = shared
        self.component = name
        self.__name__ = name

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float | None]:
        clips = self.shared.clips(completions, completion_ids, kwargs)
        return [clip.components.get(self.component) if clip.status == "scored" else clip.reward for clip in clips]

    @property
    def codec(self):
        return self.shared.reward.codec

    def load_models(self, codec: bool = True) -> None:
        self.shared.reward.load_models(codec)


def load_reward_functions(
    config: str | os.PathLike | dict | RewardConfig, *, speech_vocab: SpeechVocab | None = None, **overrides
) -> tuple[list, list[float]]:
    """TRL's reward functions and weights (GRPOConfig.reward_weights) for a config: one function per component when
    it sets "per_component": true (the combine rule is then TRL's multi_objective_aggregation), else the one
    combined reward with weight 1.0."""
    reward = load_reward(config, speech_vocab=speech_vocab, **overrides)
    if not reward.config.per_component:
        return [reward], [1.0]
    shared = ComponentScores(reward)
    return [ComponentReward(shared, name) for name in reward.component_names], list(reward.weights)
