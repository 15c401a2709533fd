"""Preference optimisation of Llasa with TRL's DPOTrainer: each row's prompt rendered exactly as inference renders it
(the opened assistant turn continued, the chat template's date pinned), its completions tokenized as the speech tokens
and END the policy wrote, and, with speech-only sampling, the log-probs of both policy and reference taken over the
tokens Llasa samples from."""

import contextlib
import logging

from trl import DPOTrainer

from llasa.format import SpeechVocab, chat_template_kwargs
from llasa.trainer import speech_only_log_probs

logger = logging.getLogger(__name__)

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def render_chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of a Llasa chat that ends in the opened assistant turn, as inference and GRPO feed them."""
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, continue_final_message=True, **chat_template_kwargs()
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the template writes <|begin_of_text|>


def tokenize_preference_row(row: dict, tokenizer, vocab: SpeechVocab) -> dict[str, list[int]]:
    """TRL's tokenized preference row: prompt_ids, chosen_ids and rejected_ids. Each completion must be speech
    tokens ending with <|SPEECH_GENERATION_END|>, what Llasa samples; anything else raises ValueError."""
    output = {"prompt_ids": render_chat_prompt(tokenizer, row["prompt"])}
    for column in ("chosen", "rejected"):
        ids = tokenizer(row[column], add_special_tokens=False)["input_ids"]
        if not ids or ids[-1] != vocab.speech_end_id or not all(vocab.is_speech_id(i) for i in ids[:-1]):
            raise ValueError(
                f"A {column} completion is not speech tokens followed by <|SPEECH_GENERATION_END|> "
                f"({row[column][:80]!r}...): export the dataset with `listen.py export --format dpo`."
            )
        output[f"{column}_ids"] = ids
    return output


def check_preference_dataset(dataset) -> None:
    missing = [column for column in PREFERENCE_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The preference dataset lacks the column(s) {missing} (it has {dataset.column_names}): write one with "
            "`listen.py export --format dpo`."
        )
    if len(dataset) == 0:
        raise ValueError(
            "The preference dataset has no row: judge more pairs (ties and inconsistent pairs are left out)."
        )


class LlasaDPOTrainer(DPOTrainer):
    """DPOTrainer over `listen.py export --format dpo` datasets: Llasa's prompts and speech completions tokenized as
    the policy sees them at inference; with `speech_only`, every log-prob over the speech tokens and END alone."""

    def __init__(self, *args, speech_only: SpeechVocab | None = None, **kwargs):
        """DPOTrainer's arguments, plus `speech_only`: the vocabulary whose speech tokens and END the log-probs are
        renormalised over (None: the whole vocabulary)."""
        self.speech_only = speech_only
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        check_preference_dataset(dataset)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        vocab = SpeechVocab.from_tokenizer(tokenizer)
        # A plain loop, not dataset.map: map would fingerprint its arguments by pickling a tokenizer of 65k added
        # tokens (tens of seconds), for a dataset of a few hundred pairs.
        rows = [tokenize_preference_row(row, tokenizer, vocab) for row in dataset.select_columns(PREFERENCE_COLUMNS)]
        for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
            dataset = dataset.add_column(column, [row[column] for row in rows])
        if args.max_length is not None:
            too_long = sum(
                len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) > args.max_length
                for row in rows
            )
            if too_long:
                logger.warning(
                    "%d of %d %s rows exceed max_length %d: their completions are cut (END and the last speech "
                    "tokens leave the loss).",
                    too_long,
                    len(rows),
                    dataset_name,
                    args.max_length,
                )
        return dataset

    @contextlib.contextmanager
    def _speech_only_heads(self):
        """Both models' LM heads renormalised over speech tokens and END, for the duration of the block."""
        if self.speech_only is None:
            yield
            return
        models = [self.accelerator.unwrap_model(self.model)]
        if self.ref_model is not None:
            models.append(self.accelerator.unwrap_model(self.ref_model))
        models = [model.get_base_model() if hasattr(model, "get_base_model") else model for model in models]
        with contextlib.ExitStack() as stack:
            for model in models:
                stack.enter_context(speech_only_log_probs(model, self.speech_only))
            yield

    def _compute_loss(self, model, inputs, return_outputs):
        with self._speech_only_heads():
            return super()._compute_loss(model, inputs, return_outputs)

    def compute_ref_log_probs(self, model, inputs):
        with self._speech_only_heads():
            return super().compute_ref_log_probs(model, inputs)
