"""The reward: weighted components (Whisper intelligibility, prosody, voice, quality) behind `load_reward`.

Importing the package registers the built-in components; register new ones with `@register_component("name")`.
"""

from llasa.rewards import emotion, intelligibility, judge, preference, prosody, speech  # noqa: F401  (registers the built-in components)
from llasa.rewards.components import (
    COMBINE_RULES,
    ComponentResult,
    Gate,
    RewardComponent,
    ScoringBatch,
    build_component,
    combine_scores,
    register_component,
)
from llasa.rewards.reward import (
    ClipScore,
    RewardConfig,
    RewardOverrides,
    SpeechReward,
    WhisperReward,
    check_reward_config,
    codec_of,
    load_reward,
    load_reward_functions,
)
