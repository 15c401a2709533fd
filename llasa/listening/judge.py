"""An audio-language model as a listener: it compares two clips of one text on a rubric (in both orders, so that a
preference for whichever clip plays first cancels out) into the preference store, and rates single clips for the
`judge` reward component.

Any audio-language checkpoint transformers loads with `AutoModelForMultimodalLM` and whose processor has a chat
template works (Qwen2-Audio, Qwen2.5-Omni, Voxtral, Granite Speech, Phi-4 multimodal): the clips go in as audio
blocks of the chat, the processor renders them as the model expects. Its answer must end with a verdict line
(`Better: 1`, `Better: 2` or `Better: same`; `Score: N` for one clip): an answer without exactly one verdict is
counted as malformed, never guessed.
"""

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llasa.listening.labeling import machine_rater
from llasa.listening.store import PreferenceStore
from llasa.model_cache import load_once

logger = logging.getLogger(__name__)

# What a listener weighs in a text-to-speech clip (RLAIF-SPA, arXiv 2510.14628, scores structure, emotion, speed and
# tone; SpeechJudge, arXiv 2511.07931, intelligibility and naturalness). `--rubric FILE` replaces it.
DEFAULT_RUBRIC = (
    "naturalness of the prosody for this text: rhythm, stress, pauses and intonation as a person would read it",
    "pronunciation: every word of the text said, clearly and correctly, nothing added",
    "voice consistency: one steady voice from the first word to the last",
    "artefacts: no noise, buzz, clicks, glitches, cut-off words or long silences",
)
SCORE_RANGE = (1, 10)  # a single clip's rating, mapped linearly to [0, 1] as a reward
DEFAULT_BATCH_SIZE = 4  # conversations generated at once
DEFAULT_MAX_NEW_TOKENS = 160  # room for a sentence or two of reasons and the verdict line
PAIR_CHUNK = 16  # pairs whose clips are loaded at once

_VERDICT = re.compile(r"\bbetter\s*(?:recording\s*)?[:=]\s*[*\"'`]*\s*(1|2|same)\b", re.IGNORECASE)
_SCORE = re.compile(r"\bscore\s*[:=]\s*[*\"'`]*\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_REASONS = re.compile(r"\breasons?\s*[:=]\s*(.+)", re.IGNORECASE)


def read_rubric(path) -> tuple[str, ...]:
    """A rubric file: one criterion per line; blank lines and lines starting with # are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    criteria = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not criteria:
        raise ValueError(f"The rubric {path} names no criterion: write one criterion per line.")
    return criteria


def _criteria_lines(rubric: Sequence[str]) -> str:
    return "\n".join(f"{number}. {criterion}" for number, criterion in enumerate(rubric, 1))


def _said(text: str | None, both: bool) -> str:
    if not text:
        return "Both recordings say the same text." if both else ""
    return f'{"Both recordings" if both else "The recording"} should say: "{text}"'


def pair_prompt(text: str | None, rubric: Sequence[str] = DEFAULT_RUBRIC) -> str:
    """What the judge is asked about two recordings (audio 1 and audio 2) of `text`."""
    return (
        f"You are an expert listener judging text-to-speech. {_said(text, both=True)}\n"
        f"Compare the two recordings on:\n{_criteria_lines(rubric)}\n"
        "Answer in exactly two lines:\n"
        "Reasons: <one or two sentences on how they differ>\n"
        "Better: <1 or 2, the better recording, or same if neither is better>"
    )


def clip_prompt(text: str | None, rubric: Sequence[str] = DEFAULT_RUBRIC) -> str:
    """What the judge is asked about one recording of `text`."""
    low, high = SCORE_RANGE
    return (
        f"You are an expert listener judging text-to-speech. {_said(text, both=False)}\n"
        f"Rate the recording on:\n{_criteria_lines(rubric)}\n"
        "Answer in exactly two lines:\n"
        "Reasons: <one or two sentences>\n"
        f"Score: <a whole number from {low} (unusable) to {high} (as good as a person reading it)>"
    )


def conversation(audios: Sequence[np.ndarray], prompt: str) -> list[dict]:
    """One user turn: the clips as audio blocks, in order, then the question."""
    return [
        {
            "role": "user",
            "content": [*({"type": "audio", "audio": audio} for audio in audios), {"type": "text", "text": prompt}],
        }
    ]


@dataclass(frozen=True)
class Answer:
    """A judge's answer read back: the verdict (None when malformed), its reasons and the whole text."""

    verdict: str | float | None  # pairs: "1", "2" or "same"; clips: the score
    reasons: str | None
    text: str


def _reasons(text: str) -> str | None:
    found = _REASONS.search(text)
    return found.group(1).strip() if found else None


def parse_pair_answer(text: str) -> Answer:
    """`Better: 1|2|same` (case, spaces and markdown emphasis aside); none, or two different ones, is malformed."""
    verdicts = {match.lower() for match in _VERDICT.findall(text)}
    return Answer(verdicts.pop() if len(verdicts) == 1 else None, _reasons(text), text)


def parse_score_answer(text: str) -> Answer:
    """`Score: N` with N in SCORE_RANGE; none, two different ones, or one out of range is malformed."""
    scores = {float(match) for match in _SCORE.findall(text)}
    score = scores.pop() if len(scores) == 1 else None
    if score is not None and not SCORE_RANGE[0] <= score <= SCORE_RANGE[1]:
        score = None
    return Answer(score, _reasons(text), text)


def score_to_reward(score: float) -> float:
    low, high = SCORE_RANGE
    return (score - low) / (high - low)


def combine_orders(first: str, second: str) -> str:
    """The pair's choice from the verdicts of both orders, in the stored order (a, b): the first order played a
    then b, the second b then a. Only a clip preferred in both orders wins; anything else is "same"."""
    second_as_stored = {"1": "2", "2": "1"}.get(second, second)
    if first == second_as_stored and first != "same":
        return "a" if first == "1" else "b"
    return "same"


class AudioJudge:
    """A loaded audio-language model that answers questions about clips, `batch_size` conversations at a time."""

    def __init__(
        self,
        model,
        processor,
        name: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ):
        self.model = model
        self.processor = processor
        self.name = name
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.sample_rate = processor.feature_extractor.sampling_rate  # what the clips are loaded at

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        """The model's greedy answer to each conversation."""
        import torch

        answers = []
        for start in range(0, len(conversations), self.batch_size):
            batch = conversations[start : start + self.batch_size]
            inputs = self.processor.apply_chat_template(
                batch,
                tokenize=True,
                return_dict=True,
                add_generation_prompt=True,
                return_tensors="pt",
                processor_kwargs={"padding": True, "sampling_rate": self.sample_rate},
                sanitize_control_tokens=True,  # a text holding <|AUDIO|> or <|im_end|> stays text
            ).to(self.model.device)
            inputs = {
                key: value.to(self.model.dtype) if torch.is_floating_point(value) else value
                for key, value in inputs.items()
            }
            with torch.inference_mode():
                output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = output[:, inputs["input_ids"].shape[1] :]
            answers += [text.strip() for text in self.processor.batch_decode(new, skip_special_tokens=True)]
        return answers

    def rate(
        self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None], rubric=DEFAULT_RUBRIC
    ) -> list[Answer]:
        """Each clip's rating on the rubric (`verdict` is the score, None when the answer is malformed)."""
        answers = self.generate(
            [conversation([wav], clip_prompt(text, rubric)) for wav, text in zip(waveforms, texts, strict=True)]
        )
        return [parse_score_answer(answer) for answer in answers]


def check_judge_model(name: str, flag: str = "--judge") -> None:
    """A local judge must be a model folder with a processor; a hub id is left to the loader."""
    from llasa.checks import check_exists

    check_exists(name, flag)
    path = Path(name).expanduser()
    if not path.exists():
        return
    if not (path / "config.json").is_file():
        raise ValueError(f"{flag} {name} is not a model folder (no config.json).")
    if not any((path / file).is_file() for file in ("processor_config.json", "preprocessor_config.json")):
        raise ValueError(f"{flag} {name} has no processor (processor_config.json / preprocessor_config.json).")


def load_judge(
    name: str,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> AudioJudge:
    """An audio-language checkpoint (hub id or folder) and its processor, ready to judge (left padding, eval mode)."""
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    from llasa.device import outside_zero3, resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    try:
        processor = AutoProcessor.from_pretrained(name)
    except OSError as e:  # a hub id that is not there, or not reachable from here
        raise ValueError(
            f"The judge {name} could not be loaded ({e}): give a model folder or a reachable hub id."
        ) from e
    if getattr(processor, "feature_extractor", None) is None or not getattr(processor, "chat_template", None):
        raise ValueError(
            f"{name} has no audio processor with a chat template: the judge needs an audio-language model such as "
            "Qwen/Qwen2-Audio-7B-Instruct."
        )
    processor.tokenizer.padding_side = "left"  # each row continues from its own last prompt token
    try:
        with outside_zero3():
            model = AutoModelForMultimodalLM.from_pretrained(name, dtype=resolve_dtype(dtype, torch_device))
    except ValueError as e:
        raise ValueError(
            f"{name} is not an audio-language model transformers loads with AutoModelForMultimodalLM ({e}): use e.g. "
            "Qwen/Qwen2-Audio-7B-Instruct."
        ) from e
    model.to(torch_device).eval()
    return AudioJudge(model, processor, Path(name).name or name, batch_size, max_new_tokens)


@load_once
def load_judge_once(
    name: str,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> AudioJudge:
    """One judge per process and setting, however many reward calls use it."""
    return load_judge(name, device, dtype, batch_size, max_new_tokens)


@dataclass(frozen=True)
class Judged:
    rater: str  # ai:<name>
    new: int  # judgments written
    already: int  # pairs this rater had judged before
    malformed: int  # pairs left unlabelled: an answer without exactly one verdict
    unreadable: int  # pairs left unlabelled: a clip could not be read
    position_flips: int = 0  # pairs whose two orders disagreed (stored as "same")
    malformed_answers: list[str] = field(default_factory=list)  # a few of them, to show


def judge_pairs(
    store: PreferenceStore,
    judge: AudioJudge,
    load: Callable[[str], np.ndarray],
    rater: str | None = None,
    rubric: Sequence[str] = DEFAULT_RUBRIC,
) -> Judged:
    """Judge every pair `rater` (default ai:<model name>) has not judged, in both orders, into the store.

    The choice is stored in the pair's registered order; the detail holds both answers, their verdicts and reasons,
    the judge and the rubric. A malformed answer leaves its pair unlabelled and counted.
    """
    rater = machine_rater(rater or judge.name)
    judged = store.judged_pairs(rater)
    pairs = [pair for pair in store.pairs() if pair["pair_id"] not in judged]
    counts = {"new": 0, "malformed": 0, "unreadable": 0, "flips": 0}
    malformed_answers = []
    for start in range(0, len(pairs), PAIR_CHUNK):
        chunk = pairs[start : start + PAIR_CHUNK]
        audio = _load_clips(chunk, load)
        readable = [pair for pair in chunk if pair["clip_a"] in audio and pair["clip_b"] in audio]
        counts["unreadable"] += len(chunk) - len(readable)
        conversations = []
        for pair in readable:
            a, b, prompt = audio[pair["clip_a"]], audio[pair["clip_b"]], pair_prompt(pair["text"], rubric)
            conversations += [conversation([a, b], prompt), conversation([b, a], prompt)]
        answers = [parse_pair_answer(text) for text in judge.generate(conversations)]
        for index, pair in enumerate(readable):
            first, second = answers[2 * index : 2 * index + 2]
            if first.verdict is None or second.verdict is None:
                counts["malformed"] += 1
                malformed_answers += [answer.text for answer in (first, second) if answer.verdict is None]
                continue
            choice = combine_orders(first.verdict, second.verdict)
            counts["flips"] += choice == "same" and not first.verdict == second.verdict == "same"
            detail = {
                "judge": judge.name,
                "rubric": list(rubric),
                "orders": [
                    {"played_first": "a", "verdict": first.verdict, "reasons": first.reasons, "answer": first.text},
                    {"played_first": "b", "verdict": second.verdict, "reasons": second.reasons, "answer": second.text},
                ],
            }
            counts["new"] += store.record(
                rater, pair["pair_id"], pair["clip_a"], pair["clip_b"], choice, kind="machine", detail=detail
            )
    if counts["malformed"]:
        logger.warning(
            "%d of %d pairs got an answer without exactly one verdict line: left unlabelled. First: %r",
            counts["malformed"],
            len(pairs),
            malformed_answers[0][:200],
        )
    return Judged(
        rater=rater,
        new=counts["new"],
        already=len(judged),
        malformed=counts["malformed"],
        unreadable=counts["unreadable"],
        position_flips=counts["flips"],
        malformed_answers=malformed_answers[:5],
    )


def _load_clips(pairs: list[dict], load: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
    audio = {}
    for pair in pairs:
        for side in ("a", "b"):
            clip_id = pair[f"clip_{side}"]
            if clip_id in audio:
                continue
            try:
                audio[clip_id] = load(pair[f"path_{side}"])
            except (OSError, RuntimeError) as e:
                logger.warning("%s", e)
    return audio
