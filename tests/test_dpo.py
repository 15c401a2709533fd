"""From listening judgments to a better policy: clips keep their codes, `listen.py export --format dpo` writes rows
that render exactly inference's token ids, and train_dpo.py raises the chosen-over-rejected margin (tiny models)."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch

import listen
import train_dpo
from llasa.audio import SAMPLE_RATE, load_audio, write_wav
from llasa.clip_codes import codes_path, read_clip_codes
from llasa.codec import encode_voice_prompt, load_codec
from llasa.dpo import tokenize_preference_row
from llasa.format import SpeechVocab
from llasa.listening.dpo_data import preference_rows
from llasa.listening.store import PreferenceStore
from llasa.synthesis import Request, SamplingOptions, load_model, prompt_ids, run

DATA = Path(__file__).parent / "data"
TEXTS = ["The quick brown fox.", "A rainbow after rain.", "Hello world."]
VOICE_TEXT = "The quick brown fox."  # what the first half second of fox_en_us.wav says: the voice
MAX_LENGTH = 128  # prompt + speech tokens: the voice prompt's 26 codes and short continuations (DPO's cost on a CPU)
CPU_FLAGS = ["--use_cpu", "--bf16", "false", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def requests(voice: Path) -> list[Request]:
    """Three texts, the last in the voice of `voice`."""
    plain = [Request(str(i), text) for i, text in enumerate(TEXTS[:2])]
    return [*plain, Request("2", TEXTS[2], prompt_wav=str(voice), prompt_text=VOICE_TEXT)]


@pytest.fixture(scope="module")
def systems(tmp_path_factory, tiny_llasa_dir, tiny_codec_dir):
    """Two samplings of the tiny Llasa written by inference's `run` (codes beside each clip), and a third system
    whose clips are the second's audio alone, without codes (as another TTS system's folder would be)."""
    root = tmp_path_factory.mktemp("systems")
    write_wav(root / "voice.wav", load_audio(DATA / "fox_en_us.wav")[: SAMPLE_RATE // 2])
    llasa = load_model(str(tiny_llasa_dir), "cpu")
    codec = load_codec(tiny_codec_dir, device="cpu")
    for name, seed in (("first", 0), ("second", 1)):
        options = SamplingOptions(max_length=MAX_LENGTH, seed=seed, min_speech_fraction=0.0)
        summary = run(
            llasa,
            codec,
            requests(root / "voice.wav"),
            root / name,
            options,
            batch_size=3,
            keep_prompt=name == "second",
        )
        assert len(summary.written) == 3
    shutil.copytree(root / "second", root / "audio_only", ignore=shutil.ignore_patterns("*.codes.json"))
    (root / "audio_only" / "metadata.csv").write_text(
        "file_name,text\n" + "".join(f"{i}.wav,{text}\n" for i, text in enumerate(TEXTS))
    )
    return root


@pytest.fixture(scope="module")
def judged(systems, tmp_path_factory):
    """A store where a listener preferred "first" to "second" on every text, and "audio_only" to "first" on text 0;
    text 1's first/audio_only pair is a tie, text 2's is judged both ways by two listeners; second/audio_only pairs
    are not judged."""
    db = tmp_path_factory.mktemp("db") / "ratings.sqlite"
    listen.main(
        ["pairs", "--db", str(db), "--pairs", *(f"{n}={systems / n}" for n in ("first", "second", "audio_only"))]
    )
    store = PreferenceStore(db)
    systems_of = {row["pair_id"]: (row["system_a"], row["system_b"], row["text"]) for row in store.pairs()}
    for pair in store.pairs():
        a, b, text = systems_of[pair["pair_id"]]
        clips = (pair["clip_a"], pair["clip_b"])
        if {a, b} == {"first", "second"}:
            store.record("listener", pair["pair_id"], *clips, "a" if a == "first" else "b")
        elif {a, b} != {"first", "audio_only"}:
            continue
        elif text == TEXTS[0]:
            store.record("listener", pair["pair_id"], *clips, "a" if a == "audio_only" else "b")
        elif text == TEXTS[1]:
            store.record("listener", pair["pair_id"], *clips, "same")
        elif text == TEXTS[2]:
            store.record("listener", pair["pair_id"], *clips, "a")
            store.record("another", pair["pair_id"], *clips, "b")
    return db


@pytest.fixture(scope="module")
def exported(judged, tiny_codec_dir, tmp_path_factory):
    """`listen.py export --format dpo` of the judgments: the dataset folder, the JSONL file and what it printed."""
    out = tmp_path_factory.mktemp("export")
    argv = ["export", "--db", str(judged), "--format", "dpo", "--dataset_dir", str(out / "prefs")]
    argv += ["--output", str(out / "prefs.jsonl"), "--codec_id", str(tiny_codec_dir), "--device", "cpu"]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        listen.main(argv)
    return out / "prefs", out / "prefs.jsonl", printed.getvalue()


def test_clips_keep_their_codes_and_prompt(systems, tiny_codec_dir):
    # inference's run writes <id>.codes.json beside each clip: the text, Llasa's prompt (the voice prompt's codes in
    # the opened assistant turn) and the generated codes, which decode to the clip written (keep_prompt aside).
    first = read_clip_codes(systems / "first" / "2.wav")
    codec = load_codec(tiny_codec_dir, device="cpu")
    voice_codes = encode_voice_prompt(codec, systems / "voice.wav")
    assert first.text == TEXTS[2]
    assert first.prompt[0]["content"].endswith(f"{VOICE_TEXT} {TEXTS[2]}<|TEXT_UNDERSTANDING_END|>")
    assert first.prompt[1]["content"] == "<|SPEECH_GENERATION_START|>" + "".join(f"<|s_{c}|>" for c in voice_codes)
    assert first.samples == len(first.codes) * 320 == len(load_audio(systems / "first" / "2.wav"))
    # With the prompt's audio kept in front, the codes are still the continuation's, and the length says so.
    second = read_clip_codes(systems / "second" / "2.wav")
    assert second.samples == (len(voice_codes) + len(second.codes)) * 320


def test_a_clip_replaced_since_no_longer_claims_its_codes(systems, tmp_path):
    shutil.copy(codes_path(systems / "first" / "0.wav"), codes_path(tmp_path / "0.wav"))
    write_wav(tmp_path / "0.wav", load_audio(systems / "first" / "0.wav")[:-320])
    assert read_clip_codes(tmp_path / "0.wav") is None
    shutil.copy(systems / "first" / "0.wav", tmp_path / "0.wav")
    assert read_clip_codes(tmp_path / "0.wav") == read_clip_codes(systems / "first" / "0.wav")


def test_export_renders_exactly_inference_ids(systems, exported, tiny_llasa_dir, tiny_codec_dir):
    # Every exported row, tokenized as train_dpo.py tokenizes it, is the prompt inference.py feeds Llasa for that
    # text (and voice prompt) followed by the clip's own codes and END. Clips written without codes are encoded.
    out, jsonl, printed = exported
    assert "4 preference pairs from 6 judged pairs (1 clips encoded)" in printed
    assert "1 ties (every judgment 'same'), 1 judged both ways" in printed
    # The voice-cloned clips of "first"/"second" share their prompt; "audio_only"'s copy of text 2 would not.
    dataset = datasets.load_from_disk(str(out))
    assert [json.loads(line)["pair_id"] for line in jsonl.read_text().splitlines()] == dataset["pair_id"]
    llasa = load_model(str(tiny_llasa_dir), "cpu")
    codec = load_codec(tiny_codec_dir, device="cpu")
    vocab = SpeechVocab.from_tokenizer(llasa.tokenizer)
    for row in dataset:
        tokenized = tokenize_preference_row(row, llasa.tokenizer, vocab)
        [request] = [r for r in requests(systems / "voice.wav") if r.text == row["text"]]
        voice = encode_voice_prompt(codec, request.prompt_wav) if request.prompt_wav else None
        assert tokenized["prompt_ids"] == prompt_ids(llasa, request, voice, MAX_LENGTH)
        for side in ("chosen", "rejected"):
            path = row[f"{side}_audio"]
            written = read_clip_codes(path)
            codes = written.codes if written else codec.encode([load_audio(path, SAMPLE_RATE)])[0]
            assert tokenized[f"{side}_ids"] == [*vocab.codes_to_ids(codes), vocab.speech_end_id], (side, path)
    assert {(row["chosen_system"], row["rejected_system"]) for row in dataset} == {
        ("first", "second"),
        ("audio_only", "first"),
    }


def test_preference_rows_need_a_codec_for_clips_without_codes(judged):
    with pytest.raises(ValueError, match="clips have no speech codes beside them .*audio_only.*--codec_id"):
        preference_rows(PreferenceStore(judged).judgments())


@pytest.mark.slow
def test_dpo_steps_raise_the_margin(exported, tiny_llasa_dir, tmp_path):
    # One round of the loop: judgments -> dataset -> DPO steps -> a checkpoint whose log-ratio of chosen over rejected
    # completions (against the model it started from) went up. All 4 pairs make each step: TRL logs the margin before
    # the step's update, so the first is 0 (policy = reference) and the second shows what the first update did.
    output = tmp_path / "dpo"
    argv = ["--model_name_or_path", str(tiny_llasa_dir), "--dataset", str(exported[0]), "--output_dir", str(output)]
    argv += ["--per_device_train_batch_size", "4", "--max_steps", "2", "--learning_rate", "1e-3"]
    train_dpo.main([*argv, "--logging_steps", "1", "--seed", "0", *CPU_FLAGS])
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    margins = [entry["rewards/margins"] for entry in history if "rewards/margins" in entry]
    assert margins[0] == pytest.approx(0.0, abs=1e-4) and margins[1] > 0.1
    assert [entry["rewards/accuracies"] for entry in history if "rewards/accuracies" in entry][1] == 1.0

    rows = datasets.load_from_disk(str(exported[0]))
    assert log_ratio_margin(output, rows) > log_ratio_margin(tiny_llasa_dir, rows)


def log_ratio_margin(model_dir, rows) -> float:
    """Sum over rows of log p(chosen) - log p(rejected), over the speech tokens and END (what Llasa samples)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    allowed = torch.tensor(vocab.allowed_ids())
    total = 0.0
    for row in rows:
        ids = tokenize_preference_row(row, tokenizer, vocab)
        for side, sign in (("chosen_ids", 1), ("rejected_ids", -1)):
            sequence = torch.tensor([ids["prompt_ids"] + ids[side]])
            with torch.no_grad():
                logits = model(sequence).logits[0, len(ids["prompt_ids"]) - 1 : -1]
            masked = torch.full_like(logits, float("-inf"))
            masked[:, allowed] = logits[:, allowed]
            log_probs = masked.log_softmax(-1).gather(1, torch.tensor(ids[side])[:, None])
            total += sign * log_probs.sum().item()
    return total


def test_training_samples_keep_their_codes(tmp_path, tiny_tokenizer, tiny_codec_dir):
    # The trainer's samples (samples/step-N/sample-K.wav) get the same codes file: the prompt GRPO sampled from and
    # the completion's codes, the non-speech tokens left out as when decoding.
    from llasa.format import build_messages
    from llasa.trainer import write_samples

    vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
    codec = load_codec(tiny_codec_dir, device="cpu", decode_only=True)
    prompts = [build_messages(text) for text in TEXTS[:2]]
    completions = [vocab.codes_to_ids([5, 6, 7]) + [vocab.speech_end_id], [vocab.eot_id, *vocab.codes_to_ids([9, 10])]]
    completions[0].insert(1, vocab.eot_id - 1)  # a stray text token, dropped
    write_samples(tmp_path, TEXTS[:2], [None, None], completions, vocab, codec, prompts)
    clip = read_clip_codes(tmp_path / "sample-0.wav")
    assert (clip.text, clip.prompt, clip.codes, clip.samples) == (TEXTS[0], prompts[0], [5, 6, 7], 3 * 320)
    # A completion without speech has no clip, and no codes file.
    assert not (tmp_path / "sample-1.wav").exists() and not codes_path(tmp_path / "sample-1.wav").exists()


def test_recipe_values_land_and_cite_their_source():
    # The DPO recipe's values reach DPOConfig (flags after --config win), each paper value naming its source.
    recipe = Path(__file__).parents[1] / "recipes" / "llasa-1b-dpo.yaml"
    script_args, args, model_args = train_dpo.parse_args(["--config", str(recipe), "--use_cpu", "--beta", "0.2"])
    assert (args.learning_rate, args.loss_type, args.max_length, args.beta) == (1e-6, ["sigmoid"], 2048, 0.2)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 8 == 64
    assert script_args.speech_only and model_args.model_name_or_path == "HKUSTAudio/Llasa-1B"
    lines = recipe.read_text().splitlines()
    for key in ("beta", "learning_rate", "loss_type"):
        [line] = [line for line in lines if line.startswith(f"{key}:")]
        assert "2305.18290" in line.split("#", 1)[1], line


def test_bad_input_is_refused_before_the_model_loads(tmp_path, judged, capsys):
    # No model, no dataset (usage errors, exit status 2), or a dataset that is not preference pairs (the judgments
    # export): one-line errors.
    for argv, message in (
        (["--dataset", "d"], "No model"),
        (["--model_name_or_path", "m"], "No dataset"),
    ):
        with pytest.raises(SystemExit) as stop:
            train_dpo.main([*argv, "--output_dir", str(tmp_path / "o"), *CPU_FLAGS])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    judgments = tmp_path / "judgments.jsonl"
    listen.main(["export", "--db", str(judged), "--output", str(judgments)])
    argv = [
        "--model_name_or_path",
        "HKUSTAudio/Llasa-1B",
        "--dataset",
        str(judgments),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit, match=r"lacks the column\(s\) \['prompt', 'chosen', 'rejected'\].*--format dpo"):
        train_dpo.main([*argv, *CPU_FLAGS])


def test_export_without_a_decided_pair_is_an_error(systems, tmp_path):
    # Only a tie to export: nothing to train on, said with the counts, and nothing written.
    db = tmp_path / "ties.sqlite"
    listen.main(["pairs", "--db", str(db), "--pairs", f"first={systems / 'first'}", f"second={systems / 'second'}"])
    store = PreferenceStore(db)
    pair = store.pairs()[0]
    store.record("listener", pair["pair_id"], pair["clip_a"], pair["clip_b"], "same")
    with pytest.raises(SystemExit, match="No preference pair to export: 0 preference pairs from 1 judged pairs"):
        listen.main(["export", "--db", str(db), "--format", "dpo", "--dataset_dir", str(tmp_path / "prefs")])
    assert not (tmp_path / "prefs").exists()
