"""The audio-LLM judge: its prompts, the parsing of its answers, both orders against position bias, `listen.py ai-label
--judge` and the `judge` reward component, on a tiny random Qwen2-Audio built and loaded like a real checkpoint."""

import shutil

import numpy as np
import pytest

import listen
from llasa.audio import SAMPLE_RATE, write_wav
from llasa.listening.judge import (
    DEFAULT_RUBRIC,
    clip_prompt,
    combine_orders,
    load_judge,
    pair_prompt,
    parse_pair_answer,
    parse_score_answer,
    read_rubric,
    score_to_reward,
)
from llasa.listening.store import PreferenceStore
from testing.tiny_judge import build_tiny_judge, script_answer

# The last text holds the judge's own control tokens: they must reach it as text, not as audio slots or turn ends.
TEXTS = ["Hello number zero.", "Hello number one.", "Say <|AUDIO|> and <|im_end|> aloud."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def random_judge(tmp_path_factory):
    """A tiny random Qwen2AudioForConditionalGeneration with its real processor: its answers are noise."""
    return build_tiny_judge(tmp_path_factory.mktemp("judge") / "tiny-qwen2-audio")


def scripted(random_judge, folder, answer: str):
    """A copy of the tiny judge that answers `answer` to anything (its saved generation config says so)."""
    shutil.copytree(random_judge, folder)
    return script_answer(folder, answer)


@pytest.fixture
def two_systems(tmp_path):
    """Two systems' folders of 3 clips (noise of different loudness), with their texts in metadata.csv."""
    rng = np.random.default_rng(0)
    folders = {}
    for system, loudness in (("base", 0.05), ("dpo", 0.2)):
        folder = tmp_path / system
        folder.mkdir()
        for i in range(len(TEXTS)):
            write_wav(
                folder / f"{i}.wav", (loudness * rng.standard_normal(SAMPLE_RATE // 2)).astype(np.float32), SAMPLE_RATE
            )
        (folder / "metadata.csv").write_text(
            "file_name,text\n" + "".join(f"{i}.wav,{text}\n" for i, text in enumerate(TEXTS))
        )
        folders[system] = folder
    return folders


def ai_label(two_systems, db, judge, *flags):
    argv = ["ai-label", "--pairs", *(f"{name}={folder}" for name, folder in two_systems.items()), "--db", str(db)]
    listen.main([*argv, "--judge", str(judge), "--device", "cpu", "--max_new_tokens", "24", *flags])


class TestPromptsAndAnswers:
    def test_pair_prompt_names_the_text_rubric_and_verdict_line(self):
        prompt = pair_prompt("Hello world.")
        assert 'Both recordings should say: "Hello world."' in prompt
        assert all(f"{i}. {criterion}" in prompt for i, criterion in enumerate(DEFAULT_RUBRIC, 1))
        assert prompt.endswith("Better: <1 or 2, the better recording, or same if neither is better>")
        # Clips paired by file name have no known text: the prompt says they share one.
        assert "Both recordings say the same text." in pair_prompt(None)

    def test_clip_prompt_asks_for_a_score_on_the_rubric(self):
        prompt = clip_prompt("Hi.", ("clarity",))
        assert 'The recording should say: "Hi."' in prompt and "1. clarity" in prompt
        assert prompt.endswith("Score: <a whole number from 1 (unusable) to 10 (as good as a person reading it)>")

    def test_pair_answers(self):
        # The verdict line is read whatever the case, spacing or markdown emphasis; reasons come with it.
        answer = parse_pair_answer("Reasons: 2 mumbles the last word.\n**Better:** 1")
        assert (answer.verdict, answer.reasons) == ("1", "2 mumbles the last word.")
        assert parse_pair_answer("better = SAME").verdict == "same"
        # No verdict, an unknown one, or two different ones are malformed: never guessed.
        for text in ("I prefer the first one.", "Better: 3", "Better: 1\nBetter: 2", ""):
            assert parse_pair_answer(text).verdict is None, text
        # The same verdict said twice is still one verdict.
        assert parse_pair_answer("Better: 2. So, Better: 2").verdict == "2"

    def test_score_answers(self):
        assert parse_score_answer("Reasons: clear.\nScore: 7").verdict == 7.0
        assert score_to_reward(7.0) == pytest.approx((7 - 1) / (10 - 1))
        assert (score_to_reward(1.0), score_to_reward(10.0)) == (0.0, 1.0)
        for text in ("Score: 11", "Score: 0", "Score: 3 or Score: 4", "seven out of ten"):
            assert parse_score_answer(text).verdict is None, text

    def test_both_orders_decide_together(self):
        # First order played a then b, the second b then a (its "1" is b). Only a clip preferred in both wins.
        assert combine_orders("1", "2") == "a"
        assert combine_orders("2", "1") == "b"
        assert combine_orders("1", "1") == "same"  # always the first played: position bias, no preference
        assert combine_orders("2", "2") == "same"
        assert combine_orders("1", "same") == "same"
        assert combine_orders("same", "same") == "same"

    def test_rubric_file(self, tmp_path):
        path = tmp_path / "rubric.txt"
        path.write_text("# what matters here\nemotion fits the text\n\nspeed\n")
        assert read_rubric(path) == ("emotion fits the text", "speed")
        path.write_text("# nothing\n")
        with pytest.raises(ValueError, match="names no criterion"):
            read_rubric(path)


class TestAiLabelWithAJudge:
    def test_loading_gives_the_processor_rate_and_the_model_name(self, random_judge):
        judge = load_judge(str(random_judge), device="cpu")
        assert (judge.sample_rate, judge.name, judge.processor.tokenizer.padding_side) == (
            16000,
            "tiny-qwen2-audio",
            "left",
        )

    def test_malformed_answers_are_counted_not_stored(self, tmp_path, two_systems, random_judge, capsys):
        # The random judge's answers hold no verdict line: every pair is left unlabelled and counted.
        db = tmp_path / "ratings.sqlite"
        ai_label(two_systems, db, random_judge)
        assert PreferenceStore(db).judgments() == []
        printed = capsys.readouterr().out
        assert "0 new judgments" in printed and "3 left unlabelled for a malformed answer" in printed

    def test_both_orders_are_stored_with_reasons(self, tmp_path, two_systems, random_judge, capsys):
        # A judge that always prefers the clip played first contradicts itself across the two orders: each pair is
        # stored as "same" under ai:<model name>, with both answers, their verdicts and reasons, and the rubric.
        judge = scripted(random_judge, tmp_path / "first-always", "Reasons: the first is clearer.\nBetter: 1")
        db = tmp_path / "ratings.sqlite"
        rubric = tmp_path / "rubric.txt"
        rubric.write_text("naturalness\nartefacts\n")
        ai_label(two_systems, db, judge, "--rubric", str(rubric), "--batch_size", "3")
        printed = capsys.readouterr().out
        assert "ai:first-always: 3 new judgments (3 judged differently in the two orders" in printed
        judgments = PreferenceStore(db).judgments()
        assert len(judgments) == 3
        assert {(j["rater"], j["kind"], j["choice"]) for j in judgments} == {("ai:first-always", "machine", "same")}
        detail = judgments[0]["detail"]
        assert (detail["judge"], detail["rubric"]) == ("first-always", ["naturalness", "artefacts"])
        assert [order["played_first"] for order in detail["orders"]] == ["a", "b"]
        assert [order["verdict"] for order in detail["orders"]] == ["1", "1"]
        assert {order["reasons"] for order in detail["orders"]} == {"the first is clearer."}
        assert detail["orders"][0]["answer"] == "Reasons: the first is clearer.\nBetter: 1"
        # Judged pairs are not judged again.
        ai_label(two_systems, db, judge)
        assert "0 new judgments" in capsys.readouterr().out and len(PreferenceStore(db).judgments()) == 3

    def test_judge_and_reward_config_are_exclusive_and_paths_checked(self, tmp_path, two_systems):
        db = tmp_path / "ratings.sqlite"
        with pytest.raises(SystemExit):
            ai_label(two_systems, db, tmp_path, "--reward_config", "r.json")
        with pytest.raises(SystemExit, match="no such file or folder"):
            ai_label(two_systems, db, "./missing_judge")
        with pytest.raises(SystemExit, match="not a model folder"):
            ai_label(two_systems, db, tmp_path)


def test_judge_component_scores_clips_in_a_grpo_step(
    tiny_llasa_dir, tiny_tokenizer, tiny_codec_dir, random_judge, tmp_path
):
    # The "judge" component rates every completion of a GRPO step on the tiny models: a judge that answers
    # "Score: 7" gives each clip (7 - 1) / 9, logged with the raw score and no malformed answer.
    import json

    import train
    from llasa.format import SpeechVocab
    from llasa.rewards import load_reward

    judge = scripted(random_judge, tmp_path / "seven", "Reasons: clear enough.\nScore: 7")
    config = {
        "codec_id": str(tiny_codec_dir),
        "device": "cpu",
        "components": {"judge": {"weight": 1.0, "model": str(judge), "device": "cpu", "max_new_tokens": 24}},
        "vad": False,  # the random model's noise holds no speech: silero-vad would score every clip 0 first
    }
    reward = load_reward(config, speech_vocab=SpeechVocab.from_tokenizer(tiny_tokenizer))
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS[:2]))
    argv = ["--model_name_or_path", str(tiny_llasa_dir), "--dataset", str(dataset), "--reward_config", "unused.json"]
    argv += ["--output_dir", str(tmp_path / "out"), "--use_cpu", "--bf16", "false", "--report_to", "none"]
    argv += ["--num_generations", "2", "--per_device_train_batch_size", "2", "--max_steps", "1"]
    argv += ["--max_completion_length", "16", "--save_strategy", "no", "--sample_every_steps", "0"]
    argv += ["--log_completions", "false", "--logging_steps", "1", "--disable_tqdm", "true"]
    script_args, training_args, model_args = train.parse_args(argv)
    trainer = train.build_trainer(script_args, training_args, model_args, reward_funcs=[reward])
    trainer.train()
    [log] = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert log["whisper_reward/reward_judge"] == pytest.approx(6 / 9)
    assert log["reward"] == pytest.approx(6 / 9)
    assert (log["whisper_reward/judge_score"], log["whisper_reward/judge_malformed"]) == (7.0, 0.0)


def test_judge_component_parameters_are_checked(tmp_path):
    from llasa.rewards import build_component

    with pytest.raises(ValueError, match='needs "model"'):
        build_component("judge", {"weight": 1.0})
    with pytest.raises(ValueError, match="no such file or folder"):
        build_component("judge", {"weight": 1.0, "model": "./missing"})
    with pytest.raises(ValueError, match="rubric"):
        build_component("judge", {"weight": 1.0, "model": "org/judge", "rubric": "be nice"})
    with pytest.raises(ValueError, match="batch_size"):
        build_component("judge", {"weight": 1.0, "model": "org/judge", "batch_size": 0})
