"""The GRPO trainer for Llasa: TRL's GRPOTrainer continuing Llasa's opened assistant turn, with step profiling,
a truncation warning and speech samples written during training."""

import contextlib
import inspect
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import trl
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.data_utils import is_conversational
from trl.extras.profiling import ProfilingContext

from llasa.audio import SAMPLE_RATE, write_wav
from llasa.clip_codes import ClipCodes, write_clip_codes
from llasa.codec import decode_speech
from llasa.format import (
    DURATION_COLUMN,
    TEXT_COLUMN,
    TOKENS_PER_SECOND,
    VOICE_CODES_COLUMN,
    SpeechVocab,
    codes_from,
    summarize_speech,
)
from llasa.numbers import is_number
from llasa.sampling import SpeechOnly

logger = logging.getLogger(__name__)

MASKED_LOGIT = -1e4  # bias of the tokens speech-only sampling never draws (finite: the entropy's 0 * x stays 0)

# The TRL releases this trainer is tested with; requirements.txt pins the same range.
SUPPORTED_TRL = ">=1.16,<1.17"
# What LlasaGRPOTrainer overrides or patches in TRL, with the leading parameters it relies on.
TRL_HOOKS = {
    (GRPOTrainer, "_tokenize_prompts"): ("self", "prompts"),
    (GRPOTrainer, "_generate_and_score_completions"): ("self", "inputs"),
    (GRPOTrainer, "_generate_single_turn"): ("self", "prompt_ids"),
    (GRPOTrainer, "_get_per_token_logps_and_entropies"): ("self", "model", "input_ids", "attention_mask"),
    (GRPOTrainer, "_calculate_rewards"): ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    (GRPOTrainer, "log"): ("self", "logs", "start_time"),
    (ProfilingContext, "_log_metrics"): ("self", "duration"),
}
TRL_ATTRIBUTES = ("_logs", "_tokenizer", "use_vllm", "use_transformers_continuous_batching")  # read on the instance


def check_trl_support(hooks: dict = TRL_HOOKS) -> None:
    """Refuse, in one line naming the supported range, a TRL whose methods this trainer overrides have moved; warn
    when the installed TRL lies outside the tested range but still fits."""
    for (owner, name), expected in hooks.items():
        method = getattr(owner, name, None)
        found = tuple(inspect.signature(method).parameters)[: len(expected)] if callable(method) else None
        if found != expected:
            problem = (
                "is gone" if found is None else f"takes ({', '.join(found)}, ...), not ({', '.join(expected)}, ...)"
            )
            raise unsupported_trl(f"{owner.__name__}.{name} {problem}")
    if Version(trl.__version__) not in SpecifierSet(SUPPORTED_TRL):
        logger.warning("TRL %s is outside the tested range trl%s.", trl.__version__, SUPPORTED_TRL)


def use_one_gpu_per_process(args) -> None:
    """One process that sees several GPUs trains on the first, where transformers would spread it over all of them
    with nn.DataParallel, which TRL refuses: a plain `python train.py` then runs on a multi-GPU host, and the other
    GPUs stay free for the reward ("device": "cuda:1"). accelerate launch runs one process per GPU to use them all."""
    if args.n_gpu > 1:
        logger.info(
            "%d GPUs are visible to this one process: training on %s (accelerate launch --num_processes %d trains "
            "on all of them).",
            args.n_gpu,
            args.device,
            args.n_gpu,
        )
        args._n_gpu = 1


def unsupported_trl(problem: str) -> ValueError:
    return ValueError(
        f"TRL {trl.__version__} is not supported: {problem}. This project supports trl{SUPPORTED_TRL}: "
        f"pip install 'trl{SUPPORTED_TRL}' (or -r requirements.txt)."
    )


def check_speech_only_support(args, speech_only: bool) -> None:
    """Refuse what speech-only sampling cannot do: transformers' continuous batching takes no logits processor, so
    it would sample any token while the log-probs only know speech tokens and END (a text token scored at -1e4)."""
    if speech_only and getattr(args, "use_transformers_continuous_batching", False):
        raise ValueError(
            "Speech-only sampling cannot run with --use_transformers_continuous_batching (it takes no logits "
            "processor): drop --use_transformers_continuous_batching, or pass --speech_only false."
        )


class LlasaGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that continues Llasa's opened assistant turn and logs speech-specific metrics.

    TRL 1.16 renders every conversational prompt with `add_generation_prompt=True`, which would close the assistant
    turn that holds <|SPEECH_GENERATION_START|> (and the voice prompt's codes) and open an empty one. Llasa must
    continue that turn, exactly as `llasa.render_prompt` renders it for inference.
    """

    def __init__(
        self,
        *args,
        codec_loader: Callable | None = None,
        sample_every_steps: int = 0,
        num_samples_to_save: int = 0,
        truncation_warning_ratio: float = 0.2,
        speech_only: SpeechOnly | None = None,
        duration_column: str | None = DURATION_COLUMN,
        **kwargs,
    ):
        """GRPOTrainer's arguments, plus: every `sample_every_steps` steps, `num_samples_to_save` clips are decoded
        with the codec `codec_loader()` returns (called once, at the first save); a warning comes when more than
        `truncation_warning_ratio` of the completions hit max_completion_length; `speech_only` samples only speech
        tokens and END, END not before each row's minimum (from its text, or its `duration_column`)."""
        check_trl_support()
        check_speech_only_support(kwargs.get("args"), speech_only is not None)
        if kwargs.get("args") is not None:
            use_one_gpu_per_process(kwargs["args"])
        super().__init__(*args, **kwargs)
        missing = [name for name in TRL_ATTRIBUTES if not hasattr(self, name)]
        if missing:
            raise unsupported_trl(f"GRPOTrainer has no {', '.join(missing)}")
        self.speech_only = speech_only
        self.duration_column = duration_column
        self._row_min_tokens = None  # per-row minimum speech tokens of the batch being generated
        self.profiling_seconds = defaultdict(float)  # filled by record_profiling() and StepTimer, emptied at each log
        self.profiled_steps = 0  # optimizer steps timed since the last log
        self.latest_batch = None  # (texts, voice prompts, completion ids, prompts) of the last scored generation batch
        self.add_callback(StepTimer(self))
        self.add_callback(TruncationWarningCallback(truncation_warning_ratio))
        self.add_callback(WeightChangeCallback(self))
        if codec_loader is not None and sample_every_steps > 0 and num_samples_to_save > 0:
            self.add_callback(SpeechSamplesCallback(self, codec_loader, sample_every_steps, num_samples_to_save))

    def train(self, *args, **kwargs):
        """GRPOTrainer.train, with TRL's profiling timings also written to the logs (trainer_state.json)."""
        with record_profiling(self):
            return super().train(*args, **kwargs)

    def _tokenize_prompts(self, prompts: list):
        if not (is_conversational({"prompt": prompts[0]}) and prompts[0][-1]["role"] == "assistant"):
            return super()._tokenize_prompts(prompts)
        rendered = [
            self.processing_class.apply_chat_template(
                prompt, tokenize=False, continue_final_message=True, **self.chat_template_kwargs
            )
            for prompt in prompts
        ]
        # The template writes <|begin_of_text|> itself.
        prompt_ids = self.processing_class(text=rendered, add_special_tokens=False)["input_ids"]
        return prompt_ids, None, {}

    def _generate_and_score_completions(self, inputs):
        if self.speech_only is not None:
            self._row_min_tokens = [
                self.speech_only.min_tokens(str(row.get(TEXT_COLUMN) or ""), _duration(row, self.duration_column))
                for row in inputs
            ]
        output = super()._generate_and_score_completions(inputs)
        if self.model.training and self.mask_truncated_completions:
            warn_if_nothing_to_learn(output["completion_mask"], self.state.global_step + 1, self.args)
        return output

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        # vLLM gets allowed_token_ids and min_tokens through generation_kwargs (llasa.run_setup.configure_speech_only).
        if self.speech_only is None or self.use_vllm or self.use_transformers_continuous_batching:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        minimums = self._row_min_tokens if len(self._row_min_tokens or ()) == len(prompt_ids) else 0
        model = self.accelerator.unwrap_model(self.model_wrapped)
        with extra_logits_processor(model, self.speech_only.processor(minimums)):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        if self.speech_only is None:
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        causal_lm = self.accelerator.unwrap_model(model)
        if hasattr(causal_lm, "get_base_model"):  # PEFT
            causal_lm = causal_lm.get_base_model()
        with speech_only_log_probs(causal_lm, self.speech_only.vocab):
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Kept for SpeechSamplesCallback: texts, voice prompts (voice cloning), the generated ids and Llasa's prompts.
        self.latest_batch = (
            [row.get(TEXT_COLUMN) for row in inputs],
            [row.get(VOICE_CODES_COLUMN) for row in inputs],
            completion_ids_list,
            [row.get("prompt") for row in inputs],
        )
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if self.log_completions:
            summarize_logged_speech(self._logs)
        if self.profiled_steps > 0:
            # Seconds per optimizer step since the last log, under TRL's own names.
            for name, seconds in self.profiling_seconds.items():
                logs[f"profiling/Time taken: {name}"] = seconds / self.profiled_steps
            self.profiling_seconds.clear()
            self.profiled_steps = 0
        logs.update(peak_gpu_memory(self.accelerator.device))
        super().log(logs, start_time)


def peak_gpu_memory(device) -> dict[str, float]:
    """This process's peak GPU memory so far, in GB (allocated by tensors, and reserved by PyTorch's cache); nothing
    off a GPU."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return {}
    return {
        "memory/peak_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9,
        "memory/peak_reserved_gb": torch.cuda.max_memory_reserved(device) / 1e9,
    }


def summarize_logged_speech(logged: dict) -> None:
    """Prompts and completions in TRL's completions table and printout as `<N speech codes>`, not token text; the
    reward's transcript column says what Whisper heard (the clips themselves: SpeechSamplesCallback)."""
    for column in ("prompt", "completion"):
        values = logged[column]
        summarized = [summarize_speech(value) for value in values]
        values.clear()
        values.extend(summarized)


def _duration(row: dict, column: str | None) -> float | None:
    value = row.get(column) if column is not None else None
    return float(value) if is_number(value) else None


@contextlib.contextmanager
def extra_logits_processor(model, processor):
    """`model.generate` with `processor` added to its logits processors, for the duration of the block (TRL builds
    the generate call itself, and a GenerationConfig cannot hold a processor)."""
    from transformers import LogitsProcessorList

    own = "generate" in vars(model)  # already replaced on the instance (e.g. by a test): put that one back
    original = model.generate

    def generate(*args, **kwargs):
        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), processor])
        return original(*args, **kwargs)

    model.generate = generate
    try:
        yield
    finally:
        if own:
            model.generate = original
        else:
            del model.generate


@contextlib.contextmanager
def speech_only_log_probs(causal_lm, vocab: SpeechVocab):
    """The trainer's log-probs over the tokens speech-only sampling draws from, for the duration of the block.

    TRL's fused LM head computes log-softmax over the whole vocabulary from the head's weight and bias. A bias of
    MASKED_LOGIT on every token but the speech tokens and END renormalises it over those alone (exp(-1e4 / T)
    is 0 in float32), so the policy's log-probs, entropies, KL and vLLM importance ratios are those of the
    distribution it samples from. The per-row minimum before END is not applied here (it depends on the position).
    """
    import torch

    head = causal_lm.get_output_embeddings()
    size = getattr(head.weight, "ds_shape", head.weight.shape)[0]  # ZeRO-3 partitions the weight
    bias = torch.full((size,), MASKED_LOGIT, dtype=torch.float32, device=head.weight.device)
    bias[torch.tensor(vocab.allowed_ids(), device=bias.device)] = 0.0
    if head.bias is not None:
        bias = bias + head.bias
    _mark_available_to_zero3(bias)
    bias = _like_fsdp2_weight(bias, head.weight)
    masked = SimpleNamespace(weight=head.weight, bias=bias)
    causal_lm.get_output_embeddings = lambda: masked
    try:
        yield
    finally:
        del causal_lm.get_output_embeddings


def _mark_available_to_zero3(tensor) -> None:
    """TRL gathers the head's bias under ZeRO-3 unless it is marked available: ours is a whole, local tensor."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        tensor.ds_status = ZeroParamStatus.AVAILABLE


def _like_fsdp2_weight(bias, weight):
    """Under FSDP2 the head's weight is a DTensor and TRL gathers weight and bias alike (`full_tensor()`): ours, whole
    on every process, is handed over as a DTensor replicated on the weight's mesh."""
    from torch.distributed.tensor import DTensor, Replicate

    if not isinstance(weight, DTensor):
        return bias
    mesh = weight.device_mesh
    return DTensor.from_local(bias, mesh, [Replicate()] * mesh.ndim, run_check=False)


@contextlib.contextmanager
def record_profiling(trainer: LlasaGRPOTrainer):
    """Collect TRL's profiling timings (sent only to wandb/mlflow/trackio) into the trainer's logs as well."""
    original = ProfilingContext._log_metrics

    def log_metrics(context, duration):
        trainer.profiling_seconds[context.name] += duration
        original(context, duration)

    ProfilingContext._log_metrics = log_metrics
    try:
        yield
    finally:
        ProfilingContext._log_metrics = original


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (generation, reward, update, optimizer), logged with the profiling times."""

    def __init__(self, trainer: LlasaGRPOTrainer):
        self.trainer = trainer
        self.started = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.started is None:
            self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.profiling_seconds["step"] += time.perf_counter() - self.started
        self.trainer.profiled_steps += 1
        self.started = None


class TruncationWarningCallback(TrainerCallback):
    """Warn when many completions hit max_completion_length: the budget is too short for the speech."""

    def __init__(self, threshold: float, every_steps: int = 100):
        self.threshold = threshold
        self.every_steps = every_steps  # repeat at most this often
        self.last_warned = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        ratio = (logs or {}).get("completions/clipped_ratio")
        if ratio is None or ratio <= self.threshold or not state.is_world_process_zero:
            return
        if self.last_warned is not None and state.global_step - self.last_warned < self.every_steps:
            return
        self.last_warned = state.global_step
        logger.warning(
            "Step %d: %.0f%% of completions reached max_completion_length (%s tokens = %.1f s) without "
            "<|SPEECH_GENERATION_END|>. Raise --max_completion_length if the texts need longer speech.",
            state.global_step,
            100 * ratio,
            args.max_completion_length,
            args.max_completion_length / TOKENS_PER_SECOND,
        )


def warn_if_nothing_to_learn(completion_mask, step: int, args) -> bool:
    """Warn, at each step where it happens, when every completion of the batch was cut at max_completion_length:
    all are masked out of the loss (mask_truncated_completions), so the step changes nothing."""
    if completion_mask.numel() == 0 or completion_mask.any():
        return False
    logger.warning(
        "Step %d: none of the %d completions ended with <|SPEECH_GENERATION_END|> within max_completion_length (%s "
        "tokens = %.1f s): all are masked (mask_truncated_completions) and this step learns nothing. Fixes: raise "
        "--max_completion_length; lower --min_speech_fraction (END is blocked before that share of the expected "
        "length); train a policy that says END (a fine-tuned Llasa does, a random one never); or pass "
        "--mask_truncated_completions false.",
        step,
        completion_mask.shape[0],
        args.max_completion_length,
        args.max_completion_length / TOKENS_PER_SECOND,
    )
    return True


class WeightChangeCallback(TrainerCallback):
    """Say at the end of training whether the trained weights moved: a run can go through every step and learn
    nothing (every completion masked, a reward that never varies within a group)."""

    def __init__(self, trainer: LlasaGRPOTrainer):
        self.trainer = trainer
        self.before = None

    def fingerprint(self):
        """The float64 sum of each trained tensor (this process's shard under ZeRO-3), summed without a copy of the
        weights: any optimizer update moves it."""
        import torch

        sums = [
            getattr(p, "ds_tensor", p).detach().sum(dtype=torch.float64)
            for p in self.trainer.model.parameters()
            if p.requires_grad
        ]
        return torch.stack(sums).cpu() if sums else None

    def on_train_begin(self, args, state, control, **kwargs):
        self.before = self.fingerprint()

    def on_train_end(self, args, state, control, **kwargs):
        after = self.fingerprint()
        if self.before is None or after is None or not state.is_world_process_zero:
            return
        changed = int((after != self.before).sum())
        if changed:
            logger.info("Training changed %d of the %d trained weight tensors.", changed, len(after))
        else:
            logger.warning(
                "Training left every trained weight unchanged over %d steps: nothing was learned. See the warnings "
                "above (completions all cut at max_completion_length, or rewards equal within every group).",
                state.global_step,
            )


class SpeechSamplesCallback(TrainerCallback):
    """Every N steps, decode a few of the latest completions to WAV under output_dir/samples/step-N/ and send
    them to the trackers in report_to (wandb, tensorboard) when present."""

    def __init__(self, trainer: LlasaGRPOTrainer, codec_loader, every_steps: int, num_samples: int):
        self.trainer = trainer
        self.codec_loader = codec_loader  # called once, on the first save
        self.codec = None
        self.every_steps = every_steps
        self.num_samples = num_samples
        self.vocab = SpeechVocab.from_tokenizer(trainer._tokenizer)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_steps <= 0 or state.global_step % self.every_steps != 0 or not state.is_world_process_zero:
            return
        if self.trainer.latest_batch is None:
            return
        texts, voice_prompts, completion_ids, prompts = (
            values[: self.num_samples] for values in self.trainer.latest_batch
        )
        folder = Path(args.output_dir) / "samples" / f"step-{state.global_step}"
        written = write_samples(folder, texts, voice_prompts, completion_ids, self.vocab, self._codec(), prompts)
        send_audio_to_trackers(self.trainer, args.report_to, written, state.global_step)

    def _codec(self):
        if self.codec is None:
            self.codec = self.codec_loader()
        return self.codec


def write_samples(
    folder: Path,
    texts: list,
    voice_prompts: list,
    completion_ids: list,
    vocab: SpeechVocab,
    codec,
    prompts: list | None = None,
) -> list[dict]:
    """Decode completions (after their voice prompt's codes, as inference does) to WAV files plus samples.jsonl
    (text, file, seconds, whether END was generated), and, given the conversational `prompts`, each clip's prompt and
    codes in sample-K.codes.json (what preference data trains on)."""
    parsed = [vocab.parse(ids) for ids in completion_ids]
    decoded = decode_speech(codec, [p.codes for p in parsed], [codes_from(prompt) for prompt in voice_prompts])
    records = []
    for index, (text, speech, pair) in enumerate(zip(texts, parsed, decoded, strict=True)):
        record = {"text": text, "codes": len(speech.codes), "ended": speech.ended, "file": None}
        if pair is not None:
            path = write_wav(folder / f"sample-{index}.wav", pair[1], codec.sample_rate)
            if prompts is not None and isinstance(prompts[index], list):
                write_clip_codes(path, ClipCodes(text, prompts[index], speech.codes, len(pair[1])))
            record.update(file=path.name, seconds=len(pair[1]) / codec.sample_rate, waveform=pair[1])
        records.append(record)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "samples.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps({k: v for k, v in record.items() if k != "waveform"}) + "\n")
    return records


def send_audio_to_trackers(trainer, report_to: list[str], records: list[dict], step: int) -> None:
    """Log the clips to wandb (wandb.Audio) and tensorboard (add_audio) when they are active."""
    clips = [(i, r) for i, r in enumerate(records) if r.get("waveform") is not None]
    if not clips:
        return
    if "wandb" in report_to:
        import wandb

        if wandb.run is not None:
            audio = {
                f"samples/{i}": wandb.Audio(r["waveform"], sample_rate=SAMPLE_RATE, caption=r["text"])
                for i, r in clips
            }
            wandb.log({**audio, "train/global_step": step})
    if "tensorboard" in report_to:
        import torch
        from transformers.integrations import TensorBoardCallback

        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                for i, r in clips:
                    callback.tb_writer.add_audio(
                        f"samples/{i}", torch.from_numpy(r["waveform"])[None], step, SAMPLE_RATE
                    )
