"""Llasa's text and speech-token format: the one place that knows how Llasa was trained.

Llasa extends the Llama-3.2 tokenizer with eight marker tokens and 65536 speech tokens `<|s_0|>` ..
`<|s_65535|>`, one per XCodec2 code. A text-to-speech prompt is a chat: the user asks
`Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>` and the
assistant's turn is opened with `<|SPEECH_GENERATION_START|>` (followed, for voice cloning, by the
speech tokens of the prompt audio). The model continues with speech tokens and stops with
`<|SPEECH_GENERATION_END|>`.
"""

import re
from dataclasses import dataclass

from llasa.audio import SAMPLE_RATE
from llasa.numbers import is_count

SAMPLES_PER_TOKEN = 320  # XCodec2's hop: one code per 20 ms
TOKENS_PER_SECOND = SAMPLE_RATE // SAMPLES_PER_TOKEN  # 50
CODEBOOK_SIZE = 65536  # one FSQ codebook of 4^8 codes
MAX_CONTEXT_TOKENS = 2048  # Llasa's training length: prompt + speech

TEXT_UNDERSTANDING_START = "<|TEXT_UNDERSTANDING_START|>"
TEXT_UNDERSTANDING_END = "<|TEXT_UNDERSTANDING_END|>"
SPEECH_GENERATION_START = "<|SPEECH_GENERATION_START|>"
SPEECH_GENERATION_END = "<|SPEECH_GENERATION_END|>"
END_OF_TURN = "<|eot_id|>"
TTS_INSTRUCTION = "Convert the text to speech:"

# Llasa's sampling, for training and inference alike: temperature 0.8 and top_p 1.0 from the model card, whose
# example leaves top_k at transformers' default of 50 (TRL's own default, 0, would sample the whole vocabulary).
SAMPLING_TEMPERATURE = 0.8
SAMPLING_TOP_P = 1.0
SAMPLING_TOP_K = 50

# The Llama-3.2 chat template writes "Today Date: ..." into every prompt; without a pinned date the
# prompt (and so the policy's input) would change every day. This is the template's own fallback.
PROMPT_DATE = "26 Jul 2024"

# Dataset columns, as create_dataset.py writes them and train.py, the reward and evaluation read them.
TEXT_COLUMN = "text"  # the words to speak: the reward's reference text
CODES_COLUMN = "audio_code_ids"  # the reference recording's XCodec2 codes (list of ints)
CODE_TOKENS_COLUMN = "audio_code_tokens"  # the same codes as one string of speech tokens
DURATION_COLUMN = "duration"  # seconds of the reference recording
VOICE_CODES_COLUMN = "prompt_code_ids"  # voice cloning: the voice prompt's codes; completions continue them
VOICE_AUDIO_COLUMN = "prompt_audio"  # voice cloning: the voice prompt as an audio file path
REFERENCE_AUDIO_COLUMN = "reference_audio"  # the reference recording as an audio file path

_SPEECH_TOKEN_PATTERN = re.compile(r"<\|s_(\d+)\|>")
_ANY_TOKEN = re.compile(r"<\|[^|]*\|>")
_END_MARKERS = re.compile(re.escape(SPEECH_GENERATION_END) + "|" + re.escape(END_OF_TURN))


def speech_token(code: int) -> str:
    """The token string of one XCodec2 code: 17 -> `<|s_17|>`."""
    if not 0 <= code < CODEBOOK_SIZE:
        raise ValueError(f"Speech code {code} is outside XCodec2's codebook [0, {CODEBOOK_SIZE - 1}].")
    return f"<|s_{code}|>"


def codes_to_tokens(codes: list[int]) -> str:
    """Codes as one string of speech tokens, the form Llasa reads and writes."""
    return "".join(speech_token(int(code)) for code in codes)


def tokens_to_codes(text: str) -> list[int]:
    """The codes of every well-formed speech token in `text`, in order; anything else is ignored."""
    codes = [int(match) for match in _SPEECH_TOKEN_PATTERN.findall(text)]
    return [code for code in codes if code < CODEBOOK_SIZE]


def codes_from(value, where: str = "a dataset cell") -> list[int]:
    """The codes a dataset cell (or a JSONL value) holds: a list of ints, or a string of speech tokens (an end marker
    may follow them); None holds none. Codes outside the codebook and other types are refused, naming `where`."""
    if value is None:
        return []
    if isinstance(value, str):
        _check_codebook([int(code) for code in _SPEECH_TOKEN_PATTERN.findall(value)], where)
        return parse_completion_text(value).codes
    if isinstance(value, list | tuple) or (hasattr(value, "ndim") and value.ndim == 1):
        codes = list(value)
        if all(is_count(code) for code in codes):
            codes = [int(code) for code in codes]
            _check_codebook(codes, where)
            return codes
    raise ValueError(
        f"{where}: codes must be a speech-token string or a list of integer codes, got {str(value)[:80]}."
    )


def _check_codebook(codes: list[int], where: str) -> None:
    """Codes outside the codebook are refused, counted, the same way for token strings and lists."""
    outside = [code for code in codes if not 0 <= code < CODEBOOK_SIZE]
    if outside:
        raise ValueError(
            f"{where}: {len(outside)} of {len(codes)} codes lie outside XCodec2's codebook [0, {CODEBOOK_SIZE - 1}] "
            f"(first: {outside[0]})."
        )


def chat_template_kwargs() -> dict:
    """Extra arguments for `apply_chat_template` (and TRL's `chat_template_kwargs`) that pin the prompt."""
    return {"date_string": PROMPT_DATE}


def build_messages(text: str, prompt_text: str | None = None, prompt_codes: list[int] | None = None) -> list[dict]:
    """The chat Llasa was trained on: a user request and the opened assistant turn to continue.

    For voice cloning, the prompt audio's transcript goes before the target text (Llasa reads them
    as one text) and the prompt audio's speech tokens open the assistant turn, so the model
    continues in that voice with the target's speech.
    """
    if not text or not text.strip():
        raise ValueError("The text to synthesise is empty.")
    if (prompt_text is None) != (prompt_codes is None):
        raise ValueError("Voice cloning needs both the prompt transcript and the prompt audio codes.")
    if prompt_codes is not None and len(prompt_codes) == 0:
        raise ValueError("The voice prompt has no speech codes: is the prompt audio empty?")
    full_text = text if prompt_text is None else f"{prompt_text.strip()} {text.strip()}"
    assistant = SPEECH_GENERATION_START + ("" if prompt_codes is None else codes_to_tokens(prompt_codes))
    return [
        {"role": "user", "content": f"{TTS_INSTRUCTION}{TEXT_UNDERSTANDING_START}{full_text}{TEXT_UNDERSTANDING_END}"},
        {"role": "assistant", "content": assistant},
    ]


def render_prompt(tokenizer, text: str, prompt_text: str | None = None, prompt_codes: list[int] | None = None) -> str:
    """The prompt string exactly as Llasa sees it, begin-of-text token included."""
    return tokenizer.apply_chat_template(
        build_messages(text, prompt_text, prompt_codes),
        tokenize=False,
        continue_final_message=True,
        **chat_template_kwargs(),
    )


def completion_text(codes: list[int]) -> str:
    """The assistant's continuation for `codes` as Llasa was trained to write it."""
    return codes_to_tokens(codes) + SPEECH_GENERATION_END


def training_pair(text: str, codes: list[int]) -> tuple[list[dict], list[dict]]:
    """TRL's conversational prompt-completion pair whose rendering is exactly Llasa's training sequence.

    The user turn is the prompt and the whole assistant turn (START, speech, END) the completion: TRL's SFT
    renders prompt + completion as one chat, which closes the turn with <|eot_id|> as Llasa's data did. (A
    prompt ending in the opened assistant turn would be closed by SFT before the completion; GRPO prompts
    are built from the text with `build_messages`, which does end in that opened turn.)
    """
    user, assistant_prefix = build_messages(text)
    return [user], [{"role": "assistant", "content": assistant_prefix["content"] + completion_text(codes)}]


@dataclass(frozen=True)
class ParsedSpeech:
    """Speech codes read back from generated token ids."""

    codes: list[int]
    ended: bool  # whether <|SPEECH_GENERATION_END|> was generated (an early <|eot_id|> stops but is not an end)
    n_dropped: int  # non-speech tokens found before the end and left out of `codes`


@dataclass(frozen=True)
class SpeechVocab:
    """Where Llasa's markers and speech tokens sit in a tokenizer's vocabulary."""

    first_speech_id: int  # id of <|s_0|>
    speech_start_id: int  # <|SPEECH_GENERATION_START|>
    speech_end_id: int  # <|SPEECH_GENERATION_END|>
    eot_id: int  # <|eot_id|>

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "SpeechVocab":
        """Look the ids up (they differ between tokenizers) and check the speech ids are contiguous."""
        vocab = tokenizer.get_vocab()
        required = [SPEECH_GENERATION_START, SPEECH_GENERATION_END, END_OF_TURN, speech_token(0)]
        missing = [token for token in required if token not in vocab]
        if missing:
            raise ValueError(
                f"The tokenizer lacks Llasa's tokens {missing}: load the tokenizer saved with a Llasa model "
                "(e.g. HKUSTAudio/Llasa-1B) rather than the base Llama tokenizer."
            )
        first = vocab[speech_token(0)]
        last = vocab.get(speech_token(CODEBOOK_SIZE - 1))
        if (
            last != first + CODEBOOK_SIZE - 1
            or vocab.get(speech_token(CODEBOOK_SIZE // 2)) != first + CODEBOOK_SIZE // 2
        ):
            raise ValueError(
                f"The tokenizer's {CODEBOOK_SIZE} speech tokens are not contiguous from id {first}: "
                "it is not a Llasa tokenizer."
            )
        return cls(
            first_speech_id=first,
            speech_start_id=vocab[SPEECH_GENERATION_START],
            speech_end_id=vocab[SPEECH_GENERATION_END],
            eot_id=vocab[END_OF_TURN],
        )

    def stop_ids(self, configured=None) -> list[int]:
        """The ids generation stops at: <|SPEECH_GENERATION_END|>, <|eot_id|>, then a generation config's own."""
        configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
        return list(dict.fromkeys([self.speech_end_id, self.eot_id, *configured]))

    def allowed_ids(self) -> list[int]:
        """What speech-only sampling may draw: <|SPEECH_GENERATION_END|>, then the 65536 speech tokens in order."""
        return [self.speech_end_id, *range(self.first_speech_id, self.first_speech_id + CODEBOOK_SIZE)]

    def is_speech_id(self, token_id: int) -> bool:
        return self.first_speech_id <= token_id < self.first_speech_id + CODEBOOK_SIZE

    def codes_to_ids(self, codes: list[int]) -> list[int]:
        for code in codes:
            if not 0 <= code < CODEBOOK_SIZE:
                raise ValueError(f"Speech code {code} is outside XCodec2's codebook [0, {CODEBOOK_SIZE - 1}].")
        return [self.first_speech_id + int(code) for code in codes]

    def parse(self, token_ids) -> ParsedSpeech:
        """Codes up to the first <|SPEECH_GENERATION_END|> (or end of turn); other tokens are dropped and counted."""
        codes, n_dropped, ended = [], 0, False
        for token_id in map(int, token_ids):
            if token_id in (self.speech_end_id, self.eot_id):
                ended = token_id == self.speech_end_id
                break
            if self.is_speech_id(token_id):
                codes.append(token_id - self.first_speech_id)
            else:
                n_dropped += 1
        return ParsedSpeech(codes=codes, ended=ended, n_dropped=n_dropped)


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


_SPEECH_RUN = re.compile(f"(?:{_SPEECH_TOKEN_PATTERN.pattern})+")


def summarize_speech(value):
    """Text, or chat messages, with each run of speech tokens written as `<N speech codes>`: what logs show instead
    of 10-15k characters of <|s_N|> per clip."""
    if isinstance(value, str):
        return _SPEECH_RUN.sub(lambda run: f"<{run.group(0).count('<|s_')} speech codes>", value)
    if isinstance(value, list | tuple):
        return [summarize_speech(item) for item in value]
    if isinstance(value, dict):
        return {key: summarize_speech(item) for key, item in value.items()}
    return value
