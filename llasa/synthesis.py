"""Speech from text with a Llasa model: loading, prompts, batched generation, voice cloning, best-of-N.

Requests come one by one or from a list file (plain text, JSONL, Seed-TTS-eval's id|prompt_text|prompt_wav|text).
Batches are left-padded; each row may generate its own budget of tokens and stops at <|SPEECH_GENERATION_END|>.
Voice cloning decodes the prompt's codes together with the new ones and cuts the prompt's audio off, as everywhere
in this project. Best-of-N samples N candidates per text and keeps the one a scorer (the reward) rates highest.
"""

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from llasa.audio import SAMPLE_RATE, write_wav
from llasa.checks import has_speakable_text, json_line
from llasa.clip_codes import CODES_SUFFIX, ClipCodes, write_clip_codes
from llasa.codec import DEFAULT_CODEC_ID, decode_speech, encode_voice_prompt
from llasa.device import DTYPES, resolve_device, resolve_dtype
from llasa.format import (
    MAX_CONTEXT_TOKENS,
    SAMPLES_PER_TOKEN,
    SAMPLING_TEMPERATURE,
    SAMPLING_TOP_K,
    SAMPLING_TOP_P,
    SPEECH_GENERATION_END,
    VOICE_AUDIO_COLUMN,
    ParsedSpeech,
    SpeechVocab,
    render_prompt,
)
from llasa.outputs import claim
from llasa.sampling import DEFAULT_MIN_SPEECH_FRACTION, SpeechOnly, check_min_speech_fraction

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("auto", "text", "jsonl", "seedtts")
# The first line of a Seed-TTS-eval list decides the format under "auto": id|prompt_text|prompt_wav|text,
# sometimes with a fifth field (the ground-truth audio, not needed to synthesise).
SEEDTTS_FIELDS = (4, 5)
_UNSAFE_ID = re.compile(r"[/\\\x00]")


class SynthesisError(ValueError):
    """A text that cannot be spoken, with the reason and the fix; batch runs skip it and go on."""


@dataclass(frozen=True)
class Request:
    """One text to speak, optionally in the voice of a prompt recording."""

    id: str  # output file stem: <output_dir>/<id>.wav
    text: str
    prompt_wav: str | None = None  # path of the voice prompt audio
    prompt_text: str | None = None  # its transcript
    source: str = ""  # where it came from ("texts.jsonl line 3"), for messages
    recording: str | None = None  # a recording of the text itself (Seed-TTS-eval's 5th field), not needed to speak


@dataclass(frozen=True)
class Skipped:
    """A request that produced no audio, and why."""

    id: str
    reason: str


@dataclass(frozen=True)
class SamplingOptions:
    """How speech tokens are sampled."""

    max_length: int = field(
        default=MAX_CONTEXT_TOKENS, metadata={"help": "Prompt + speech tokens (Llasa was trained on 2048)."}
    )
    temperature: float = field(
        default=SAMPLING_TEMPERATURE, metadata={"help": "Sampling temperature, as in training; 0 = greedy."}
    )
    top_p: float = field(default=SAMPLING_TOP_P, metadata={"help": "Nucleus sampling, in (0, 1]."})
    top_k: int = field(default=SAMPLING_TOP_K, metadata={"help": "Top-k sampling; 0 = off."})
    repetition_penalty: float | None = field(
        default=None, metadata={"help": "Default: the model's generation config (1.0, off)."}
    )
    seed: int | None = field(
        default=None, metadata={"help": "Random seed, set once per run: the same seed gives the same speech."}
    )
    speech_only: bool = field(
        default=True,
        metadata={
            "help": "Draw only speech tokens and <|SPEECH_GENERATION_END|>, END not before --min_speech_fraction of "
            "the text's expected length (--no_speech_only: any token)."
        },
    )
    min_speech_fraction: float = field(
        default=DEFAULT_MIN_SPEECH_FRACTION,
        metadata={"help": "Share of a text's expected speech tokens before END may be drawn, in [0, 1]."},
    )

    def __post_init__(self):
        if self.max_length < 1:
            raise ValueError(f"--max_length must be >= 1, got {self.max_length}.")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"--top_k must be >= 0 (0 = off), got {self.top_k}.")
        check_min_speech_fraction(self.min_speech_fraction)


@dataclass(frozen=True)
class ModelOptions:
    """Where and how the models of a synthesis run: the codec, the device, the weights' dtype, the batch."""

    codec_id: str | None = field(
        default=None,
        metadata={
            "help": f"XCodec2 checkpoint, hub id or folder (default: the --reward_config's codec_id, else "
            f"{DEFAULT_CODEC_ID})."
        },
    )
    batch_size: int = field(default=1, metadata={"help": "Texts generated together (each as num_samples rows)."})
    device: str = field(default="auto", metadata={"help": "auto, cuda, cuda:1, cpu, mps."})
    dtype: Literal[DTYPES] = field(
        default="auto", metadata={"help": "Model weights' dtype (auto: bfloat16 on GPU, else float32)."}
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}.")


@dataclass(frozen=True)
class Llasa:
    """A loaded Llasa model with its tokenizer and speech-token layout."""

    model: torch.nn.Module
    tokenizer: object
    vocab: SpeechVocab
    eos_ids: tuple[int, ...]  # generation stops at any of these; <|SPEECH_GENERATION_END|> among them

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass(frozen=True)
class Candidate:
    """One sampled continuation, decoded."""

    codes: list[int]  # generated speech codes (the voice prompt's excluded)
    ended: bool  # whether <|SPEECH_GENERATION_END|> came within the token budget
    n_dropped: int  # non-speech tokens generated before the end, left out
    waveform: np.ndarray  # the generated speech alone: len(codes) * SAMPLES_PER_TOKEN samples at 16 kHz
    prompt_waveform: np.ndarray  # the voice prompt as decoded in front of it (empty without a prompt)


@dataclass(frozen=True)
class Clip:
    """The result for one request: its candidates and the one kept."""

    request: Request
    candidates: list[Candidate]
    chosen: int = 0  # index of the kept candidate
    scores: list[dict] | None = None  # per candidate, when a scorer picked the best
    prompt_codes: list[int] | None = None  # the voice prompt's codes (voice cloning), which led the assistant turn

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    def waveform(self, keep_prompt: bool = False) -> np.ndarray:
        best = self.best
        return np.concatenate([best.prompt_waveform, best.waveform]) if keep_prompt else best.waveform


@dataclass(frozen=True)
class RunSummary:
    written: list[Path]
    skipped: list[Skipped]


# A scorer rates waveforms (16 kHz) against the texts they should say: one dict per clip with a "reward"
# (higher is better; None when the clip cannot be scored) and any component scores.
Scorer = Callable[[list[np.ndarray], list[str], dict | None], list[dict]]  # waveforms, texts, dataset columns


def load_model(name_or_path: str, device: str = "auto", dtype: str = "auto") -> Llasa:
    """Load a Llasa checkpoint (hub id or folder, a PEFT adapter folder too) ready to generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype, torch_device))
    model.to(torch_device).eval()
    # Batches are left-padded so that every row continues from its own last prompt token.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(vocab.eot_id)
    eos_ids = tuple(vocab.stop_ids(model.generation_config.eos_token_id))
    return Llasa(model=model, tokenizer=tokenizer, vocab=vocab, eos_ids=eos_ids)


def read_input_file(path, input_format: str = "auto") -> tuple[list[Request], list[Skipped]]:
    """The requests of a list file, and its bad lines (reported, not fatal).

    Formats: plain text (one text per line, ids are zero-padded line numbers), JSONL (`text`, optional `id`,
    `prompt_wav`, `prompt_text`; other keys ignored) and Seed-TTS-eval (`id|prompt_text|prompt_wav|text`).
    Blank lines are ignored. Relative prompt_wav paths are taken from the list file's folder.
    """
    from llasa.checks import read_text_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file {path} not found.")
    if b"\x00" in path.read_bytes()[:8192]:
        raise ValueError(f"{path} is a binary file, not a list of texts (plain text, JSONL or Seed-TTS-eval).")
    lines = read_text_file(path).splitlines()
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path} is empty: it needs one text per line (or JSONL / Seed-TTS-eval lines).")
    if input_format == "auto":
        input_format = _detect_format(path, lines)
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"Unknown input format {input_format!r}: choose one of {', '.join(INPUT_FORMATS)}.")
    width = max(4, len(str(len(lines))))
    requests, skipped, seen = [], [], set()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        default_id = f"{line_no:0{width}d}"
        source = f"{path.name} line {line_no}"
        try:
            request = _parse_line(line, input_format, default_id, source, path.parent)
            if request.id in seen:
                raise SynthesisError(f"id {request.id!r} is used by an earlier line; ids name the output files.")
        except SynthesisError as e:
            skipped.append(Skipped(id=default_id, reason=f"{source}: {e}"))
            continue
        seen.add(request.id)
        requests.append(request)
    return requests, skipped


def _detect_format(path: Path, lines: list[str]) -> str:
    """The list's format from its suffix (.jsonl, .lst), else from every line: JSONL when each is a JSON object,
    Seed-TTS-eval when each has its 4 or 5 fields, plain text when none is either. A list that mixes them is an
    error: one line alone (`{laughs} Hello`, a text with three |) must not decide how the others are read."""
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix == ".lst":
        return "seedtts"
    kinds = {number: _line_format(line) for number, line in enumerate(lines, 1) if line.strip()}
    found = set(kinds.values())
    if len(found) == 1:
        return found.pop()
    examples = ", ".join(
        f"{kind} (line {next(n for n, k in kinds.items() if k == kind)})" for kind in INPUT_FORMATS if kind in found
    )
    raise ValueError(
        f"{path}: its lines read as different formats: {examples}. Pass --input_format text, jsonl or seedtts to "
        "say how every line is read."
    )


def _line_format(line: str) -> str:
    try:
        if isinstance(json_line(line), dict):
            return "jsonl"
    except ValueError:
        pass
    return "seedtts" if len(line.split("|")) in SEEDTTS_FIELDS else "text"


def _parse_line(line: str, input_format: str, default_id: str, source: str, folder: Path) -> Request:
    if input_format == "text":
        return _request(default_id, line, None, None, source, folder)
    if input_format == "seedtts":
        fields = line.split("|")
        if len(fields) not in SEEDTTS_FIELDS:
            raise SynthesisError(f"expected id|prompt_text|prompt_wav|text, found {len(fields)} fields")
        request = _request(fields[0].strip(), fields[3], fields[2].strip(), fields[1], source, folder)
        recording = fields[4].strip() if len(fields) == 5 else ""
        return replace(request, recording=str(folder / recording)) if recording else request
    try:
        record = json_line(line)
    except ValueError as e:
        raise SynthesisError(str(e)) from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise SynthesisError('expected a JSON object with a "text" string')
    for key in ("prompt_wav", "prompt_text"):
        if not isinstance(record.get(key), str | None):
            raise SynthesisError(f'"{key}" must be a string')
    request_id = str(record["id"]) if record.get("id") is not None else default_id
    return _request(request_id, record["text"], record.get("prompt_wav"), record.get("prompt_text"), source, folder)


def _request(request_id, text, prompt_wav, prompt_text, source, folder: Path) -> Request:
    if not request_id or request_id in (".", "..") or _UNSAFE_ID.search(request_id):
        raise SynthesisError(f"id {request_id!r} cannot name a file")
    text = text.strip()
    if not text:
        raise SynthesisError("the text is empty")
    if not has_speakable_text(text):
        raise SynthesisError(f"the text {text!r} has no letter or digit: nothing to speak")
    if prompt_wav:
        prompt_wav = str(folder / prompt_wav)  # an absolute prompt_wav stays as it is
    return Request(
        id=request_id, text=text, prompt_wav=prompt_wav or None, prompt_text=prompt_text or None, source=source
    )


def voice_prompt_codes(codec, request: Request) -> list[int] | None:
    """The XCodec2 codes of the request's prompt audio (None without voice cloning)."""
    if request.prompt_wav is None and request.prompt_text is None:
        return None
    if request.prompt_wav is None or request.prompt_text is None or not request.prompt_text.strip():
        raise SynthesisError("voice cloning needs both the prompt audio (prompt_wav) and its transcript (prompt_text)")
    try:
        return encode_voice_prompt(codec, request.prompt_wav)
    except RuntimeError as e:
        raise SynthesisError(f"{e}; check the prompt_wav path") from e


def prompt_ids(llasa: Llasa, request: Request, prompt_codes: list[int] | None, max_length: int) -> list[int]:
    """The request's prompt token ids (the same rendering train.py uses), checked to leave room for speech."""
    prompt = render_prompt(
        llasa.tokenizer, request.text, request.prompt_text if prompt_codes is not None else None, prompt_codes
    )
    # The rendered prompt already starts with <|begin_of_text|>.
    ids = llasa.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) >= max_length:
        raise SynthesisError(
            f"the prompt takes {len(ids)} tokens, leaving no room for speech within max_length {max_length}: "
            "shorten the text (or the voice prompt) or raise --max_length"
        )
    return ids


class _TokenBudget(StoppingCriteria):
    """Stops each row once it has generated its own budget (max_length - its prompt length) of tokens."""

    def __init__(self, prompt_width: int, budgets: list[int]):
        self.prompt_width = prompt_width
        self.budgets = torch.tensor(budgets)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_width
        return generated >= self.budgets.to(input_ids.device)


def _sampling_kwargs(options: SamplingOptions) -> dict:
    if options.temperature == 0:
        return {"do_sample": False}
    kwargs = {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k}
    if options.repetition_penalty is not None:
        kwargs["repetition_penalty"] = options.repetition_penalty
    return kwargs


def speech_only_processors(
    llasa: Llasa, options: SamplingOptions, texts: list[str] | None, num_samples: int
) -> LogitsProcessorList:
    """Speech-only sampling for one `generate` call (none when options.speech_only is off): END is allowed after
    each text's own minimum; without texts, right away."""
    if not options.speech_only:
        return LogitsProcessorList()
    speech_only = SpeechOnly(llasa.vocab, options.min_speech_fraction)
    minimums = [0] if texts is None else [speech_only.min_tokens(text) for text in texts for _ in range(num_samples)]
    return LogitsProcessorList([speech_only.processor(minimums)])


@torch.inference_mode()
def generate_speech(
    llasa: Llasa,
    prompts: list[list[int]],
    options: SamplingOptions,
    num_samples: int = 1,
    texts: list[str] | None = None,
) -> list[list[ParsedSpeech]]:
    """Sample `num_samples` continuations per prompt in one left-padded batch, parsed into speech codes.

    Each row may generate max_length - its prompt length tokens, and stops early at
    <|SPEECH_GENERATION_END|> (or end of turn). With speech-only sampling (the default), only speech tokens and END
    are drawn, END not before its minimum share of the row's `texts` expected length.
    """
    budgets = [options.max_length - len(ids) for ids in prompts]
    batch = llasa.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(llasa.device)
    width = batch["input_ids"].shape[1]
    row_budgets = [budget for budget in budgets for _ in range(num_samples)]  # rows come prompt by prompt
    output = llasa.model.generate(
        **batch,
        max_new_tokens=max(budgets),
        num_return_sequences=num_samples,
        eos_token_id=list(llasa.eos_ids),
        pad_token_id=llasa.tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([_TokenBudget(width, row_budgets)]),
        logits_processor=speech_only_processors(llasa, options, texts, num_samples),
        **_sampling_kwargs(options),
    )
    rows = [
        llasa.vocab.parse(row[:budget].tolist()) for row, budget in zip(output[:, width:], row_budgets, strict=True)
    ]
    return [rows[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def synthesize_batch(
    llasa: Llasa,
    codec,
    requests: list[Request],
    options: SamplingOptions,
    num_samples: int = 1,
    scorer: Scorer | None = None,
) -> list[Clip | Skipped]:
    """Speak a batch of requests: one Clip or Skipped per request, in order.

    A request that cannot be prepared (bad prompt audio, no room) or whose candidates hold no speech code
    is Skipped with the reason; the rest of the batch goes on. With a scorer, the best candidate is kept.
    """
    outcomes: list[Clip | Skipped | None] = [None] * len(requests)
    prepared = []  # (index, prompt codes, prompt ids)
    for index, request in enumerate(requests):
        try:
            prompt_codes = voice_prompt_codes(codec, request)
            prepared.append((index, prompt_codes, prompt_ids(llasa, request, prompt_codes, options.max_length)))
        except (SynthesisError, ValueError) as e:
            outcomes[index] = Skipped(request.id, _describe(request, e))
    if prepared:
        texts = [requests[index].text for index, _, _ in prepared]
        parsed = generate_speech(llasa, [ids for _, _, ids in prepared], options, num_samples, texts)
        # Decode every candidate of the batch in one codec call.
        decoded = _decode(
            codec, [(codes, p) for (_, codes, _), samples in zip(prepared, parsed, strict=True) for p in samples]
        )
        for position, (index, prompt_codes, ids) in enumerate(prepared):
            request = requests[index]
            candidates = [c for c in decoded[position * num_samples : (position + 1) * num_samples] if c]
            budget = options.max_length - len(ids)
            outcomes[index] = _clip_or_skip(request, candidates, budget, num_samples, prompt_codes)
    if scorer is not None:
        outcomes = _pick_best(outcomes, scorer)
    return outcomes


def _describe(request: Request, error: Exception) -> str:
    return f"{request.source}: {error}" if request.source else str(error)


def _decode(codec, items: list[tuple[list[int] | None, ParsedSpeech]]) -> list[Candidate | None]:
    """Each candidate's audio, decoded after its voice prompt's codes (one codec call); None without speech."""
    decoded = decode_speech(codec, [parsed.codes for _, parsed in items], [prompt for prompt, _ in items])
    return [
        None
        if pair is None
        else Candidate(
            codes=parsed.codes,
            ended=parsed.ended,
            n_dropped=parsed.n_dropped,
            waveform=np.asarray(pair[1], dtype=np.float32),
            prompt_waveform=np.asarray(pair[0], dtype=np.float32),
        )
        for (_, parsed), pair in zip(items, decoded, strict=True)
    ]


def _clip_or_skip(
    request: Request, candidates: list[Candidate], budget: int, num_samples: int, prompt_codes: list[int] | None
) -> Clip | Skipped:
    if not candidates:
        return Skipped(
            request.id,
            _describe(
                request,
                SynthesisError(
                    f"the model generated no speech tokens ({num_samples} sample(s)); no audio written. "
                    "Check that the checkpoint is a Llasa model and the sampling settings (--temperature, --top_p)"
                ),
            ),
        )
    unfinished = [candidate for candidate in candidates if not candidate.ended]
    if unfinished:
        seconds = max(len(candidate.codes) for candidate in unfinished) * SAMPLES_PER_TOKEN / SAMPLE_RATE
        logger.warning(
            "%s: no %s within %d tokens%s; decoding the speech generated (up to %.1f s). Raise --max_length if the "
            "speech is cut short.",
            request.id,
            SPEECH_GENERATION_END,
            budget,
            "" if len(candidates) == 1 else f" in {len(unfinished)} of {len(candidates)} candidates",
            seconds,
        )
    return Clip(request=request, candidates=candidates, prompt_codes=prompt_codes)


def best_of_n(waveforms: list[np.ndarray], request: Request, scorer: Scorer) -> tuple[int, list[dict]]:
    """Index of the highest-reward waveform for the request, and every waveform's scores.

    Waveforms the scorer cannot rate (reward None) lose to any rated one; ties keep the earliest. The voice prompt,
    if any, is the voice the reward's speaker similarity compares with.
    """
    columns = {} if request.prompt_wav is None else {VOICE_AUDIO_COLUMN: [request.prompt_wav] * len(waveforms)}
    scores = scorer(waveforms, [request.text] * len(waveforms), columns)
    rewards = [-np.inf if score.get("reward") is None else score["reward"] for score in scores]
    return int(np.argmax(rewards)), scores


def load_scorer(reward_config, device: str = "auto") -> Scorer:
    """Best-of-N's verifier: the Whisper reward of `reward_config` (a JSON path or dict) on waveforms and texts.

    Each clip's scores are the reward module's: reward, wer or cer, nll, transcript, component scores.
    `device` overrides the config's unless "auto".
    """
    from llasa.rewards import load_reward

    reward = load_reward(reward_config, device=None if device == "auto" else device)

    def score(waveforms: list[np.ndarray], texts: list[str], columns: dict | None = None) -> list[dict]:
        return [clip.to_json() for clip in reward.score_audio(waveforms, texts, columns)]

    return score


def _pick_best(outcomes: list[Clip | Skipped], scorer: Scorer) -> list[Clip | Skipped]:
    picked = []
    for outcome in outcomes:
        if isinstance(outcome, Clip):
            chosen, scores = best_of_n([c.waveform for c in outcome.candidates], outcome.request, scorer)
            outcome = replace(outcome, chosen=chosen, scores=scores)
        picked.append(outcome)
    return picked


def synthesize(
    llasa: Llasa,
    codec,
    requests: list[Request],
    options: SamplingOptions,
    *,
    batch_size: int = 1,
    num_samples: int = 1,
    scorer: Scorer | None = None,
    progress: bool = True,
) -> Iterator[Clip | Skipped]:
    """Speak every request in batches of `batch_size` texts, yielding one Clip or Skipped per request in order."""
    from transformers import set_seed

    if options.seed is not None:
        set_seed(options.seed)  # once per run: batches draw on one random stream
    with tqdm(total=len(requests), unit="text", desc="Synthesising", disable=not progress) as bar:
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]
            yield from synthesize_batch(llasa, codec, batch, options, num_samples, scorer)
            bar.update(len(batch))


def write_clip(clip: Clip, wav_path, keep_prompt: bool = False) -> Path:
    """Write the kept candidate as 16 kHz WAV, its codes and prompt in <stem>.codes.json and, when candidates were
    scored, their scores in <stem>.json."""
    waveform = clip.waveform(keep_prompt)
    wav_path = write_wav(wav_path, waveform, SAMPLE_RATE)
    request = clip.request
    prompt_text = request.prompt_text if clip.prompt_codes is not None else None
    write_clip_codes(
        wav_path, ClipCodes.for_text(request.text, clip.best.codes, len(waveform), prompt_text, clip.prompt_codes)
    )
    if clip.scores is not None:
        record = {
            "id": clip.request.id,
            "text": clip.request.text,
            "chosen": clip.chosen,
            "candidates": [
                {
                    "n_codes": len(candidate.codes),
                    "duration_s": len(candidate.waveform) / SAMPLE_RATE,
                    "ended": candidate.ended,
                    "n_dropped": candidate.n_dropped,
                    **scores,
                }
                for candidate, scores in zip(clip.candidates, clip.scores, strict=True)
            ],
        }
        wav_path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return wav_path


def output_paths(requests: list[Request], output_dir, scored: bool = False) -> list[Path]:
    """What `run` writes: <output_dir>/<id>.wav, its codes in <id>.codes.json, and <id>.json with the candidates'
    scores when they are scored."""
    suffixes = (".wav", CODES_SUFFIX, ".json") if scored else (".wav", CODES_SUFFIX)
    return [Path(output_dir) / f"{request.id}{suffix}" for request in requests for suffix in suffixes]


def run(
    llasa: Llasa,
    codec,
    requests: list[Request],
    output_dir,
    options: SamplingOptions,
    *,
    batch_size: int = 1,
    num_samples: int = 1,
    scorer: Scorer | None = None,
    keep_prompt: bool = False,
    skipped: list[Skipped] = (),
) -> RunSummary:
    """Synthesise `requests` to <output_dir>/<id>.wav; bad requests are reported and skipped, not fatal.

    `skipped` carries earlier skips (bad lines of the list file) into the closing summary.
    """
    output_dir = Path(output_dir)
    claim(output_paths(requests, output_dir, scorer is not None), "--output_dir")
    written, skipped = [], list(skipped)
    for outcome in synthesize(
        llasa, codec, requests, options, batch_size=batch_size, num_samples=num_samples, scorer=scorer
    ):
        if isinstance(outcome, Skipped):
            logger.warning("Skipped %s", outcome.reason)
            skipped.append(outcome)
        else:
            written.append(write_clip(outcome, output_dir / f"{outcome.request.id}.wav", keep_prompt))
    summary = RunSummary(written=written, skipped=skipped)
    logger.info("Wrote %d clips to %s; skipped %d.", len(written), output_dir, len(skipped))
    for skip in skipped:
        logger.info("  skipped %s", skip.reason)
    return summary
