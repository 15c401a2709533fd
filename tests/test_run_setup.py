"""Preparing a GRPO run (llasa.run_setup): training datasets, prompts built and counted, voice prompts, budgets."""

import json
from pathlib import Path

import pytest

import llasa
import llasa.run_setup as run_setup
from llasa import MAX_CONTEXT_TOKENS

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_load_training_dataset_from_files_and_folders(tmp_path):
    # JSON, JSONL, CSV and Parquet files and save_to_disk folders (Dataset, or DatasetDict with a split) all load,
    # numbers as numbers (the duration that sizes the completions and feeds the reward).
    from datasets import Dataset, DatasetDict

    rows = [{"text": "one", "duration": 1.5}, {"text": "two", "duration": 2.0}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.csv").write_text("text,duration\none,1.5\ntwo,2\n")
    Dataset.from_list(rows).to_parquet(str(tmp_path / "a.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "flat"))
    DatasetDict({"train": Dataset.from_list(rows[:1]), "dev": Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "dd")
    )
    for source in ("a.json", "a.jsonl", "a.csv", "a.parquet", "flat"):
        loaded = run_setup.load_training_dataset(str(tmp_path / source))
        assert (loaded["text"], loaded["duration"]) == (["one", "two"], [1.5, 2.0]), source
    assert run_setup.load_training_dataset(str(tmp_path / "dd"), split="dev")["text"] == ["one", "two"]
    # A missing split lists the splits; a missing file or an unknown file type is named.
    with pytest.raises(ValueError, match="splits are: train, dev"):
        run_setup.load_training_dataset(str(tmp_path / "dd"), split="test")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        run_setup.load_training_dataset(str(tmp_path / "missing.jsonl"))
    (tmp_path / "a.txt").write_text("one\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        run_setup.load_training_dataset(str(tmp_path / "a.txt"))


def test_build_prompts_drops_and_counts_bad_rows(tiny_tokenizer):
    # Empty texts and texts whose speech cannot fit in the context are dropped and counted; the rest get
    # Llasa's conversational prompt and their stripped text.
    from datasets import Dataset

    long_text = "word " * 2000  # ~10000 chars: ~36000 speech tokens at 14 chars/s
    rows = {
        "text": ["  Hello world. ", "", None, "   ", long_text, "Too long by duration.", "Fits."],
        "duration": [1.0, 1.0, 1.0, 1.0, None, 45.0, None],
        "speaker": ["a", "b", "c", "d", "e", "f", "g"],
    }
    dataset, summary = run_setup.build_prompts(Dataset.from_dict(rows), tiny_tokenizer)
    assert (summary.rows, summary.kept, summary.empty_text, summary.too_long, summary.dropped) == (7, 2, 3, 2, 5)
    assert dataset["text"] == ["Hello world.", "Fits."]
    assert dataset["speaker"] == ["a", "g"]  # other columns follow their rows
    assert dataset["prompt"][0] == llasa.build_messages("Hello world.")
    # 1.0 s -> 51 tokens with END; "Fits." is 5 chars / 14 per s -> 18 tokens with END.
    assert summary.max_speech_tokens == 51
    rendered = [llasa.render_prompt(tiny_tokenizer, text) for text in ("Hello world.", "Fits.")]
    assert summary.max_prompt_tokens == max(map(len, tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"]))
    assert "3 empty text" in summary.report() and "2 too long" in summary.report()


def test_missing_text_column_lists_the_columns(tiny_tokenizer):
    # The error names the missing column, the columns there are, and the flag to pass.
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"no column 'text' \(--text_column\); its columns are: sentence, id"):
        run_setup.build_prompts(Dataset.from_dict({"sentence": ["hi"], "id": [1]}), tiny_tokenizer)


def test_raw_audio_columns_are_dropped_and_others_kept(tiny_tokenizer):
    # An Audio column (create_dataset.py --keep_audio, hub speech datasets) would be decoded for every batch and no
    # reward reads it: it is dropped; the columns the reward reads stay, row for row.
    from datasets import Audio, Dataset

    rows = {"text": ["", "Hello."], "audio": [str(DATA / "fox_en_us.wav")] * 2, "duration": [1.0, 2.0]}
    dataset = Dataset.from_dict(rows).cast_column("audio", Audio())
    built, summary = run_setup.build_prompts(dataset, tiny_tokenizer)
    assert built.column_names == ["text", "prompt", "duration"]
    assert (summary.kept, built[0]["duration"]) == (1, 2.0)


def test_per_row_voice_prompts(tiny_tokenizer):
    # Each row continues its own reference voice (codes as a list or as speech tokens); rows without one are dropped.
    from datasets import Dataset

    rows = {
        "text": ["Target one.", "Target two.", "Target three."],
        "ref_codes": [[1, 2, 3], [], [4, 5]],
        "ref_text": ["Reference one.", "Reference two.", "Reference three."],
    }
    dataset, summary = run_setup.build_prompts(
        Dataset.from_dict(rows), tiny_tokenizer, prompt_codes_column="ref_codes", prompt_text_column="ref_text"
    )
    assert (summary.kept, summary.no_voice_prompt) == (2, 1)
    assert dataset["prompt"][1] == llasa.build_messages("Target three.", "Reference three.", [4, 5])
    assert dataset["text"] == ["Target one.", "Target three."]  # the reward hears only the target
    assert dataset["prompt_code_ids"] == [[1, 2, 3], [4, 5]]  # the voice the reward's speaker similarity compares to
    tokens = Dataset.from_dict({"text": ["T."], "ref_codes": [llasa.codes_to_tokens([9, 8])], "ref_text": ["R."]})
    dataset, _ = run_setup.build_prompts(
        tokens, tiny_tokenizer, prompt_codes_column="ref_codes", prompt_text_column="ref_text"
    )
    assert dataset["prompt"][0] == llasa.build_messages("T.", "R.", [9, 8])
    assert dataset["prompt_code_ids"] == [[9, 8]]


def test_expected_speech_and_completion_budget():
    # 50 tokens per second plus END, from the duration or from the text length at the assumed speaking rate.
    assert run_setup.expected_speech_tokens("ignored", 2.0, 14.0) == 101
    assert run_setup.expected_speech_tokens("x" * 28, None, 14.0) == 101
    # The budget is the longest utterance plus the margin, within the context the longest prompt leaves.
    assert run_setup.size_completion_length(100, 80, margin=1.3) == 130
    assert run_setup.size_completion_length(1000, 1950, margin=1.3) == MAX_CONTEXT_TOKENS - 1950


def test_reference_codes_size_the_completion_budget(tiny_tokenizer):
    # A row with its reference codes (create_dataset.py's audio_code_ids) expects exactly that many speech tokens
    # plus END, whatever its text or duration say; rows without codes fall back to the duration, then the text.
    from datasets import Dataset

    rows = {
        "text": ["Short.", "Hi there.", "Ok."],
        "audio_code_ids": [[7] * 91, [], None],
        "duration": [0.2, 1.0, None],
    }
    _, summary = run_setup.build_prompts(Dataset.from_dict(rows), tiny_tokenizer)
    assert summary.max_speech_tokens == 92  # 91 codes + END, not 0.2 s x 50 + 1 = 11
    _, summary = run_setup.build_prompts(Dataset.from_dict(rows).select([1, 2]), tiny_tokenizer)
    assert summary.max_speech_tokens == 51  # 1.0 s x 50 + END, above "Ok." at 12 letters per second
    assert run_setup.reference_code_lengths(Dataset.from_dict({"text": ["a"]})) is None


def test_per_component_reward_weights_go_to_trl(tiny_tokenizer):
    # "per_component": true gives TRL one function per component and the config's weights as reward_weights; a
    # --reward_weights of the right length wins, one of the wrong length is refused naming the components; the
    # combined reward leaves reward_weights alone.
    from types import SimpleNamespace

    config = str(REPO / "reward_models" / "prosody_per_component.json")
    args = SimpleNamespace(reward_weights=None, multi_objective_aggregation="normalize_then_sum")
    functions = run_setup.load_reward_funcs(config, tiny_tokenizer, args)
    names = ["wer", "nll", "duration", "intonation", "pauses", "speaker_similarity", "quality"]
    assert [f.__name__ for f in functions] == names
    assert args.reward_weights == [0.4, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05]
    assert len({id(f.shared) for f in functions}) == 1  # one shared scorer: one decode and Whisper pass per batch
    args = SimpleNamespace(reward_weights=[1.0] * 7, multi_objective_aggregation="normalize_then_sum")
    run_setup.load_reward_funcs(config, tiny_tokenizer, args)
    assert args.reward_weights == [1.0] * 7
    with pytest.raises(ValueError, match="7 components \\(wer, nll, duration"):
        run_setup.load_reward_funcs(config, tiny_tokenizer, SimpleNamespace(reward_weights=[1.0, 1.0]))
    args = SimpleNamespace(reward_weights=None)
    [combined] = run_setup.load_reward_funcs(str(REPO / "reward_models" / "wer_nll.json"), tiny_tokenizer, args)
    assert combined.__name__ == "whisper_reward" and args.reward_weights is None


def test_vllm_gets_the_speech_only_vocabulary_and_the_smallest_minimum(tiny_tokenizer):
    # vLLM's SamplingParams are one per call: allowed_token_ids = END + the 65536 speech ids, and min_tokens = the
    # smallest row minimum (a 1.0 s row: 25); transformers generation (use_vllm off) gets nothing here.
    from types import SimpleNamespace

    from datasets import Dataset

    from llasa.format import SpeechVocab
    from llasa.sampling import SpeechOnly

    speech_only = SpeechOnly(SpeechVocab.from_tokenizer(tiny_tokenizer))
    dataset = Dataset.from_dict({"text": ["Hi.", "A much longer sentence to say."], "duration": [1.0, None]})
    args = SimpleNamespace(use_vllm=True, generation_kwargs={"stop_token_ids": [1]})
    run_setup.configure_speech_only(args, speech_only, dataset, "duration")
    assert args.generation_kwargs["min_tokens"] == 25 and args.generation_kwargs["stop_token_ids"] == [1]
    assert args.generation_kwargs["allowed_token_ids"] == speech_only.vocab.allowed_ids()
    assert len(args.generation_kwargs["allowed_token_ids"]) == 65537
    args = SimpleNamespace(use_vllm=False, generation_kwargs=None)
    run_setup.configure_speech_only(args, speech_only, dataset, "duration")
    assert args.generation_kwargs is None
