"""Text as the error rate compares it: Whisper's normalisers, the WER/CER choice per language, and the error rate."""

import functools

# Languages written without spaces between words: scored by CER, and their text tokens take no leading space.
NO_SPACE_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})
# Korean puts spaces between phrases, but its error rate is reported per character (as in the paper).
CER_LANGUAGES = NO_SPACE_LANGUAGES | {"ko"}


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
