"""The "judge" reward component: an audio-language model rates each clip on a rubric (llasa.listening.judge), its
1-10 score mapped to [0, 1]; a malformed answer scores None."""

from dataclasses import dataclass

from llasa.device import DTYPES, check_device_name
from llasa.listening.judge import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_RUBRIC,
    check_judge_model,
    load_judge_once,
    score_to_reward,
)
from llasa.rewards.components import ComponentResult, RewardComponent, ScoringBatch, register_component


@register_component("judge")
@dataclass(frozen=True)
class JudgeComponent(RewardComponent):
    """What an audio LLM hears: {"weight": 0.2, "model": "Qwen/Qwen2-Audio-7B-Instruct"}, optionally "rubric" (a list
    of criteria), "device", "dtype", "batch_size" and "max_new_tokens". Logs "judge_score" (1-10) and
    "judge_malformed" (1 where the answer held no single score). It generates an answer per clip: affordable for
    best-of-N and evaluation, costly in GRPO (a 7B judge on every completion)."""

    model: str = ""  # hub id or folder of an audio-language model (AutoModelForMultimodalLM with a chat template)
    rubric: tuple[str, ...] = DEFAULT_RUBRIC
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError('The judge component needs "model": an audio-language checkpoint (hub id or folder).')
        try:  # checked now, not at the first batch of a long run
            check_judge_model(self.model, "The judge component's model")
        except FileNotFoundError as e:
            raise ValueError(str(e)) from e
        if isinstance(self.rubric, str) or not self.rubric or not all(isinstance(c, str) and c for c in self.rubric):
            raise ValueError(f'The judge\'s "rubric" must be a list of criteria (strings), got {self.rubric!r}.')
        object.__setattr__(self, "rubric", tuple(self.rubric))
        check_device_name(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r} for the judge: use one of {list(DTYPES)}.")
        for key in ("batch_size", "max_new_tokens"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"The judge's {key} must be a positive integer, got {value!r}.")

    def score(self, batch: ScoringBatch) -> ComponentResult:
        from llasa.audio import resample

        judge = load_judge_once(self.model, self.device, self.dtype, self.batch_size, self.max_new_tokens)
        audio = [resample(wav, batch.sample_rate, judge.sample_rate) for wav in batch.audio]
        answers = judge.rate(audio, batch.texts, self.rubric)
        scores = [answer.verdict for answer in answers]
        return ComponentResult(
            [None if score is None else score_to_reward(score) for score in scores],
            {"judge_score": scores, "judge_malformed": [float(score is None) for score in scores]},
        )
