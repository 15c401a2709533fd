"""llasa-grpo's library: Llasa's format (re-exported here), the codec, audio, data, synthesis, training and the reward."""

from llasa.quiet import silence_unactionable_notices

silence_unactionable_notices()  # first: some of these notices come at import time

from llasa.audio import SAMPLE_RATE  # noqa: E402
from llasa.format import (  # noqa: E402
    CODEBOOK_SIZE,
    END_OF_TURN,
    MAX_CONTEXT_TOKENS,
    PROMPT_DATE,
    SAMPLES_PER_TOKEN,
    SAMPLING_TEMPERATURE,
    SAMPLING_TOP_K,
    SAMPLING_TOP_P,
    SPEECH_GENERATION_END,
    SPEECH_GENERATION_START,
    TEXT_UNDERSTANDING_END,
    TEXT_UNDERSTANDING_START,
    TOKENS_PER_SECOND,
    TTS_INSTRUCTION,
    ParsedSpeech,
    SpeechVocab,
    build_messages,
    chat_template_kwargs,
    codes_from,
    codes_to_tokens,
    completion_text,
    render_prompt,
    speech_token,
    tokens_to_codes,
    training_pair,
)
