"""The "emotion" component: a speech-emotion classifier loaded through transformers (any audio-classification
checkpoint: a wav2vec2, WavLM or HuBERT emotion model, a hub id or a folder) hears each clip.

A row that names its target emotion (the `emotion_column`, a label of the model's `id2label`) scores the
probability of that emotion; a row without one scores the cosine of the clip's emotion probabilities with its voice
prompt's (the style of the speaker's own recording kept), the first of `voice_columns` with a value. Logs
"emotion_top" (the index of the most probable label) and "emotion_confidence" (its probability).
"""

from dataclasses import dataclass

import numpy as np

from llasa.audio import usable_waveform
from llasa.device import check_device_name, resolve_device
from llasa.format import VOICE_AUDIO_COLUMN, VOICE_CODES_COLUMN
from llasa.model_cache import load_once
from llasa.rewards.components import ComponentResult, RewardComponent, ScoringBatch, register_component
from llasa.rewards.speech import _column_names
from llasa.scores import _map_distinct

MIN_SECONDS = 0.3  # shorter (or silent) clips are not scored


@load_once
def _classifier(model: str, device: str):
    """(feature extractor, model) of an audio-classification checkpoint, once per process and device."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    try:
        extractor = AutoFeatureExtractor.from_pretrained(model)
        network = AutoModelForAudioClassification.from_pretrained(model).to(device).eval()
    except (OSError, ValueError) as e:
        raise ValueError(
            f"Could not load the emotion model {model!r} (an audio-classification checkpoint): {e}"
        ) from e
    return extractor, network


@register_component("emotion")
@dataclass(frozen=True)
class EmotionComponent(RewardComponent):
    """{"weight": 0.1, "model": "folder-or-hub-id"}: see the module's docstring."""

    model: str = ""  # audio-classification checkpoint (hub id or folder)
    emotion_column: str = "emotion"  # the row's target emotion, a label of the model
    voice_columns: tuple[str, ...] = (VOICE_CODES_COLUMN, VOICE_AUDIO_COLUMN)  # style to keep where no target
    device: str = "auto"

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError('The emotion component needs "model": an audio-classification checkpoint (id or folder).')
        if not isinstance(self.emotion_column, str) or not self.emotion_column:
            raise ValueError(f"emotion_column must be a column name, got {self.emotion_column!r}.")
        object.__setattr__(self, "voice_columns", _column_names(self.voice_columns, "voice_columns"))
        check_device_name(self.device)

    def input_columns(self) -> tuple[str, ...]:
        return (self.emotion_column, *self.voice_columns)

    def labels(self) -> dict[str, int]:
        """The model's labels (lower case) and their indices."""
        _, network = _classifier(self.model, str(resolve_device(self.device)))
        return {str(label).lower(): int(index) for index, label in network.config.id2label.items()}

    def probabilities(self, waveforms) -> list[np.ndarray | None]:
        """Each clip's emotion probabilities, one clip per forward pass (padding would change the others' output
        in models that normalise over time)."""
        import torch

        extractor, network = _classifier(self.model, str(resolve_device(self.device)))
        results = []
        for waveform in waveforms:
            wav = usable_waveform(waveform, MIN_SECONDS)
            if wav is None:
                results.append(None)
                continue
            inputs = extractor(wav, sampling_rate=extractor.sampling_rate, return_tensors="pt").to(network.device)
            with torch.no_grad():
                logits = network(**inputs).logits[0].float()
            results.append(torch.softmax(logits, -1).cpu().numpy())
        return results

    def score(self, batch: ScoringBatch) -> ComponentResult:
        n = len(batch.audio)
        targets = batch.columns.get(self.emotion_column, [None] * n)
        labels = self.labels()
        unknown = sorted({str(t) for t in targets if t and str(t).lower() not in labels})
        if unknown:
            raise ValueError(
                f"The {self.emotion_column!r} column names emotions the model {self.model!r} does not know: "
                f"{unknown}; its labels are {sorted(labels)}."
            )
        clips = self.probabilities(batch.audio)
        voices = [
            None if target else value
            for target, value in zip(targets, batch.first_values(self.voice_columns), strict=True)
        ]
        voice_probabilities = _map_distinct(self.probabilities, batch.references.waveforms(voices))
        scores = []
        for clip, target, voice in zip(clips, targets, voice_probabilities, strict=True):
            if clip is None:
                scores.append(None)
            elif target:
                scores.append(float(clip[labels[str(target).lower()]]))
            elif voice is not None:
                scores.append(float(np.dot(clip, voice) / (np.linalg.norm(clip) * np.linalg.norm(voice))))
            else:
                scores.append(None)
        metrics = {
            "emotion_top": [None if p is None else float(np.argmax(p)) for p in clips],
            "emotion_confidence": [None if p is None else float(np.max(p)) for p in clips],
        }
        missing = [not target and voice is None for target, voice in zip(targets, voices, strict=True)]
        return ComponentResult(scores, metrics, missing=missing)
