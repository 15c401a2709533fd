"""The "preference" reward component: a preference model trained on listening-test judgments (listen.py
train-reward) scores each clip sigmoid(utility - reference utility), in [0, 1]."""

from dataclasses import dataclass
from pathlib import Path

from llasa.listening.preference import PreferenceModel, preference_scores
from llasa.model_cache import load_once
from llasa.rewards.components import ComponentResult, RewardComponent, ScoringBatch, register_component


@load_once
def _load_model(folder: str) -> PreferenceModel:
    """One copy per process of each model folder, however many components or reward calls use it."""
    return PreferenceModel.load(folder)


@register_component("preference")
@dataclass(frozen=True)
class PreferenceComponent(RewardComponent):
    """Listeners' preference as learned from the judgments: {"weight": 0.1, "model": "prefs_model"}. Logs
    "preference_utility" (the raw Bradley-Terry utility). A clip too short or silent to measure scores None."""

    model: str = ""  # folder written by `listen.py train-reward` (config.json + model.safetensors)

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError('The preference component needs "model": the folder listen.py train-reward wrote.')
        try:  # checked now, not at the first batch of a long run
            _load_model(str(Path(self.model).resolve()))
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"The preference component's model: {e}") from e

    def score(self, batch: ScoringBatch) -> ComponentResult:
        model = _load_model(str(Path(self.model).resolve()))
        scores, utilities = preference_scores(model, batch.audio, batch.sample_rate)
        return ComponentResult(scores, {"preference_utility": utilities})
