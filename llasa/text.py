"""Text rules of the reward and the evaluation: how references and transcripts are normalised and compared.

Three normalisers, chosen by name (`NORMALIZERS`):

- "multilingual" (the default): numbers compared in one form on both sides (digits read out in the text's language,
  each debatable reading scored and the lowest error kept), Unicode marks kept (Devanagari, Bengali, Tamil, Thai...),
  Chinese converted to simplified on both sides, punctuation and case removed as Seed-TTS-eval does; English keeps
  Whisper's English rules (spellings, contractions, titles) except its number rule.
- "whisper": Whisper's own normalisers as the paper used them (English for "en", the basic one otherwise), kept for
  reproduction. They turn spoken numbers into digits in English only, and cut words at every combining mark.
- "seed-tts-eval": the rule of Seed-TTS-eval's scoring script, to compare with published tables: ASCII punctuation
  except the apostrophe and Chinese punctuation (zhon's list) removed, English lower-cased, Chinese converted to
  simplified; nothing else (numbers are compared as written, marks and other languages' case kept).

The error rate is CER for languages written without spaces (and Korean), WER otherwise. `compression_ratio` and
`is_repetition_loop` are Whisper's guard against a decoder that repeats itself until its token limit.
"""

import functools
import itertools
import math
import re
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from decimal import Decimal

# Languages written without spaces between words: scored by CER, and their text tokens take no leading space.
NO_SPACE_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})
# Korean puts spaces between phrases, but its error rate is reported per character (as in the paper).
CER_LANGUAGES = NO_SPACE_LANGUAGES | {"ko"}

METRICS = ("auto", "wer", "cer")
NORMALIZERS = ("multilingual", "whisper", "seed-tts-eval")
DEFAULT_NORMALIZER = "multilingual"

# Whisper's transcribe treats a transcript whose zlib compression ratio is above 2.4 as a repetition loop.
REPETITION_THRESHOLD = 2.4
# Up to this many combinations of number readings are all scored; beyond it each number's reading is chosen in turn.
MAX_READING_COMBINATIONS = 16

# Chinese is compared in simplified characters (as Seed-TTS-eval does with zhconv).
CHINESE_LANGUAGES = frozenset({"zh", "yue"})
# Languages whose texts write zero as 〇 as well as 零.
HAN_ZERO_LANGUAGES = CHINESE_LANGUAGES | {"ja"}
# num2words spellings that Whisper's one language code covers (European and Brazilian Portuguese count differently).
NUM2WORDS_DIALECTS = {"pt": ("pt", "pt_BR")}

# A numeral: digit groups joined by single separators ("2024", "1,000", "3.5", "10 000", "1 2 3"). In English, an
# ordinal ("21st") is read as one.
NUMERAL = re.compile(r"\d+(?:[.,\s]\d+)*")
ENGLISH_NUMERAL = re.compile(r"(?P<ordinal>\d+)(?:st|nd|rd|th)\b|\d+(?:[.,\s]\d+)*", re.IGNORECASE)
NUMERAL_SEPARATOR = re.compile(r"[.,\s]")


# A first guess of the speaking rate, in `text_length` characters per second, where a dataset gives no durations to
# estimate its own from (`estimate_speaking_rate`): English read speech at about 14 characters per second, spaces and
# punctuation included, is about 12 letters and digits (they are 80 % of the bundled clips' texts; espeak-ng itself
# speaks those at 15). Chinese or Japanese run at about 4 characters per second.
DEFAULT_CHARS_PER_SECOND = 12.0


def text_length(text: str) -> int:
    """Letters and digits in `text` (any script): what a speaking rate is counted in, spaces and punctuation aside."""
    return sum(char.isalnum() for char in text)


# ---------------------------------------------------------------------------------------------------------------------
# Metric and normaliser names


def error_metric(metric: str, language: str) -> str:
    """The error rate to compute: `metric` itself, or for "auto" CER where scored per character, else WER."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}: use one of {list(METRICS)}.")
    if metric == "auto":
        return "cer" if language in CER_LANGUAGES else "wer"
    return metric


def check_normalizer(normalizer: str) -> None:
    if normalizer not in NORMALIZERS:
        raise ValueError(f"Unknown text normalizer {normalizer!r}: use one of {list(NORMALIZERS)}.")


# ---------------------------------------------------------------------------------------------------------------------
# "whisper": the paper's rule


@functools.cache
def whisper_normalizer(language: str):
    """Whisper's English normaliser for "en" (spellings, numbers, contractions), its basic one otherwise."""
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer() if language == "en" else BasicTextNormalizer()


def whisper_text(text: str, language: str, metric: str) -> str:
    """The text as the "whisper" normaliser compares it: Whisper's normaliser; CER ignores spaces."""
    normalized = " ".join(whisper_normalizer(language)(text).split())
    return normalized.replace(" ", "") if metric == "cer" else normalized


# ---------------------------------------------------------------------------------------------------------------------
# "seed-tts-eval": the published benchmark's rule


@functools.cache
def _seed_tts_eval_punctuation() -> frozenset[str]:
    """What Seed-TTS-eval strips: Python's string.punctuation but the apostrophe, and zhon's Chinese punctuation."""
    import string

    from zhon.hanzi import punctuation

    return frozenset(string.punctuation + punctuation) - {"'"}


def seed_tts_eval_text(text: str, language: str, metric: str) -> str:
    """The text as Seed-TTS-eval's run_wer.py compares it: its punctuation removed (not replaced by a space),
    English lower-cased, Chinese in simplified characters; CER ignores spaces."""
    if language in CHINESE_LANGUAGES:
        import zhconv

        text = zhconv.convert(text, "zh-cn")
    punctuation = _seed_tts_eval_punctuation()
    text = "".join(character for character in text if character not in punctuation)
    if language == "en":
        text = text.lower()
    text = " ".join(text.split())
    return text.replace(" ", "") if metric == "cer" else text


# ---------------------------------------------------------------------------------------------------------------------
# "multilingual": numbers read out, marks kept, Chinese simplified


def number_readings(numeral: str, language: str) -> tuple[str, ...]:
    """The ways `numeral` (digits, maybe grouped: "2024", "1,000", "3.5", "1 2 3") can be read in `language`.

    In order, without repeats: the whole number when its groups are thousands ("1,000" -> one thousand); a decimal
    when it has one "." or "," ("3,5"); each group on its own ("1 2 3" -> one two three); a year ("2024" -> twenty
    twenty-four, where num2words knows how); digit by digit ("2024" -> two zero two four). Each in every spelling
    known for the language (Portuguese of Portugal and Brazil; Japanese in kanji and kana; English with and without
    "and"). A language with no number words here keeps the numeral as written.
    """
    groups = NUMERAL_SEPARATOR.split(numeral)
    separators = NUMERAL_SEPARATOR.findall(numeral)
    digits = "".join(groups)
    readings = []
    if len(groups) == 1 or (
        len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]) and len(set(separators)) == 1
    ):
        readings += spoken_numbers(digits, language)
    if len(groups) == 2 and separators[0] in ".,":
        readings += spoken_numbers(f"{groups[0]}.{groups[1]}", language)
    if len(groups) > 1:
        readings += _each_read(groups, language)
    if len(groups) == 1 and len(digits) == 4:
        readings += spoken_numbers(digits, language, to="year")
    if len(digits) > 1:
        readings += _each_read(digits, language)
    return tuple(dict.fromkeys(readings)) or (numeral,)


def _each_read(numbers: Sequence[str], language: str) -> list[str]:
    """The numbers read one after the other ("1", "2", "3" -> "one two three"), in the language's first spelling."""
    words = [spoken_numbers(number, language)[:1] for number in numbers]
    return [" ".join(word for [word] in words)] if all(words) else []


@functools.lru_cache(maxsize=4096)
def spoken_numbers(number: str, language: str, to: str = "cardinal") -> tuple[str, ...]:
    """`number` ("2024", "3.5") in words (`to`: "cardinal", "ordinal" or "year"), every spelling known for
    `language`; () if none.

    Chinese with cn2an (cardinals and decimals), the other languages with num2words.
    """
    value = Decimal(number) if "." in number else int(number)
    if language in CHINESE_LANGUAGES:
        spelled = _chinese_number(value) if to == "cardinal" else None
        return (spelled,) if spelled else ()
    spellings = []
    for dialect in NUM2WORDS_DIALECTS.get(language, (language,)):
        for options in ({}, {"reading": True}) if language == "ja" else ({},):
            spelled = _num2words(value, dialect, to, options)
            if spelled:
                spellings.append(spelled)
    if language == "en":
        spellings += [spelled.replace(" and ", " ") for spelled in spellings]  # American: "one hundred twenty"
    return tuple(dict.fromkeys(spellings))


def _num2words(value: int | Decimal, dialect: str, to: str, options: dict) -> str | None:
    from num2words import num2words

    try:
        return num2words(value, lang=dialect, to=to, **options)
    except (NotImplementedError, OverflowError):  # a language it does not speak, a number too large for it
        return None


def _chinese_number(value: int | Decimal) -> str | None:
    import cn2an

    try:
        return cn2an.an2cn(str(value))
    except ValueError:  # more than 16 digits
        return None


def _numeral_pattern(language: str) -> re.Pattern:
    return ENGLISH_NUMERAL if language == "en" else NUMERAL


def text_readings(text: str, language: str) -> list[tuple[str, ...]]:
    """`text` cut into pieces, each with its possible readings: one for plain text, several for some numbers.

    The text is NFKC-normalised first (full-width digits and letters become plain ones), Chinese is converted to
    simplified characters, and 〇 is read as 零 in Chinese and Japanese.
    """
    text = unicodedata.normalize("NFKC", text)
    if language in CHINESE_LANGUAGES:
        import zhconv

        text = zhconv.convert(text, "zh-cn")
    if language in HAN_ZERO_LANGUAGES:
        text = text.replace("〇", "零")
    pieces, end = [], 0
    for match in _numeral_pattern(language).finditer(text):
        pieces.append((text[end : match.start()],))
        if match.groupdict().get("ordinal"):
            readings = spoken_numbers(match["ordinal"], language, to="ordinal") or (match.group(),)
        else:
            readings = number_readings(match.group(), language)
        pieces.append(tuple(f" {reading} " for reading in readings))  # "5kg": a number is a word of its own
        end = match.end()
    pieces.append((text[end:],))
    return pieces


@functools.cache
def english_words_normalizer():
    """Whisper's English normaliser without its number rule, which writes number words as digits (badly:
    "one two three" -> "123"); numbers are already words here."""
    from whisper.normalizers import EnglishTextNormalizer

    normalizer = EnglishTextNormalizer()
    normalizer.standardize_numbers = lambda text: text
    return normalizer


def multilingual_text(text: str, language: str, metric: str) -> str:
    """Case, punctuation and symbols removed, marks kept; spaces collapsed, and removed altogether for CER.

    English goes through Whisper's English rules (without numbers); other languages are lower-cased, every
    punctuation mark and symbol becomes a space and invisible format characters (zero-width joiners...) go.
    """
    if language == "en":
        text = english_words_normalizer()(text)
    else:
        text = "".join(_clean_character(character) for character in text.lower())
    text = " ".join(text.split())
    return text.replace(" ", "") if metric == "cer" else text


def _clean_character(character: str) -> str:
    category = unicodedata.category(character)
    if category[0] in "PS":
        return " "
    return "" if category == "Cf" else character


# ---------------------------------------------------------------------------------------------------------------------
# Comparing


def normalize(text: str, language: str, metric: str = "auto", normalizer: str = DEFAULT_NORMALIZER) -> str:
    """The text as `error_rate` compares it; with "multilingual", each number in its first reading."""
    check_normalizer(normalizer)
    metric = error_metric(metric, language)
    if normalizer == "whisper":
        return whisper_text(text, language, metric)
    if normalizer == "seed-tts-eval":
        return seed_tts_eval_text(text, language, metric)
    return multilingual_text(_assemble(text_readings(text, language), []), language, metric)


def _assemble(pieces: Sequence[tuple[str, ...]], choice: Sequence[int]) -> str:
    """The text with the chosen reading of each piece (the first where `choice` is shorter than `pieces`)."""
    chosen = list(choice) + [0] * (len(pieces) - len(choice))
    return "".join(readings[index] for readings, index in zip(pieces, chosen, strict=True))


def error_rate(
    reference: str, hypothesis: str, language: str, metric: str = "auto", normalizer: str = DEFAULT_NORMALIZER
) -> float | None:
    """WER or CER (`metric` "auto": CER for `CER_LANGUAGES`, WER otherwise) of one transcript after normalisation;
    None if the normalised reference is empty.

    With "multilingual", a number can be read several ways ("2024": two thousand twenty-four, twenty twenty-four,
    two zero two four; "1,000": one thousand or one point zero; "1 2 3": one two three), on either side. Every
    combination of readings of the reference's and the transcript's numbers is scored and the lowest error is
    kept, so a transcript is never penalised for writing as digits what the reference spells out, or the reverse.
    Where a number is wrong whatever the reading, the lowest error comes with the reference's longest reading (one
    wrong word among more): "in 2024 we met" against "in 2025 we met" is 1/8, from "in two thousand and twenty four
    we met", rather than 1/6.
    Beyond `MAX_READING_COMBINATIONS` combinations, each number's reading is chosen in turn (the others held) to
    lower the error: never above the error with every number in its first reading.
    """
    check_normalizer(normalizer)
    metric = error_metric(metric, language)
    if normalizer in ("whisper", "seed-tts-eval"):
        rule = whisper_text if normalizer == "whisper" else seed_tts_eval_text
        return _error(rule(reference, language, metric), rule(hypothesis, language, metric), metric)
    reference_pieces = text_readings(reference, language)
    hypothesis_pieces = text_readings(hypothesis, language)

    @functools.cache
    def reference_reading(choice: tuple[int, ...]) -> str:
        return multilingual_text(_assemble(reference_pieces, choice), language, metric)

    @functools.cache
    def hypothesis_reading(choice: tuple[int, ...]) -> str:
        return multilingual_text(_assemble(hypothesis_pieces, choice), language, metric)

    if not reference_reading((0,) * len(reference_pieces)):
        return None

    def error_of(choice: tuple[int, ...]) -> float:
        split = len(reference_pieces)
        return _error(reference_reading(choice[:split]), hypothesis_reading(choice[split:]), metric)

    return _lowest(error_of, [len(readings) for readings in reference_pieces + hypothesis_pieces])


def _lowest(error_of: Callable[[tuple[int, ...]], float], counts: Sequence[int]) -> float:
    """The lowest error over choices of one reading per piece (`counts[i]` readings for piece i)."""
    if math.prod(counts) <= MAX_READING_COMBINATIONS:
        return min(error_of(choice) for choice in itertools.product(*(range(count) for count in counts)))
    choice = (0,) * len(counts)
    best = error_of(choice)
    for piece, count in enumerate(counts):
        for index in range(1, count):
            candidate = choice[:piece] + (index,) + choice[piece + 1 :]
            error = error_of(candidate)
            if error < best:
                best, choice = error, candidate
    return best


def _error(reference: str, hypothesis: str, metric: str) -> float | None:
    import jiwer

    if not reference:
        return None
    if metric == "cer":
        return jiwer.process_characters(reference, hypothesis).cer
    return jiwer.process_words(reference, hypothesis).wer


# ---------------------------------------------------------------------------------------------------------------------
# Repetition loops


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length, as Whisper's transcribe computes it: high for repeated text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def is_repetition_loop(text: str, threshold: float = REPETITION_THRESHOLD) -> bool:
    """Whether a transcript compresses as a decoding loop does ("oito, oito, oito, ..."): Whisper's transcribe
    then decodes again at a higher temperature."""
    return compression_ratio(text) > threshold
