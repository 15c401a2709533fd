"""inference.py on tiny random Llasa and XCodec2 checkpoints (and Whisper tiny.en for best-of-N).

Random tiny models almost never say <|SPEECH_GENERATION_END|>, so each test gives the model a few tokens of room
(max_length = prompt length + a handful) and counts on the budget to end generation.
"""

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import inference
import llasa.synthesis as synthesis
from llasa import SAMPLES_PER_TOKEN, SPEECH_GENERATION_END, build_messages
from llasa.audio import load_audio
from llasa.outputs import RECORD_FILE
from llasa.synthesis import Request, SamplingOptions, Skipped

DATA = Path(__file__).parent / "data"
ROOM = 8  # speech tokens each test lets the model generate


@pytest.fixture(scope="module")
def llasa(tiny_llasa_dir):
    return synthesis.load_model(str(tiny_llasa_dir), device="cpu")


@pytest.fixture(scope="module")
def whisper_reward_config(tiny_codec_dir, tiny_en):
    return {
        "asr_backend": "faster-whisper",
        "asr_model": tiny_en,
        "codec_id": str(tiny_codec_dir),
        "device": "cpu",
        "vad": False,  # the random model's noise holds no speech: silero-vad would score every clip 0 first
    }


def room_for(llasa, request: Request, codec=None, room: int = ROOM) -> int:
    """A max_length leaving exactly `room` tokens after the request's prompt."""
    prompt_codes = None if codec is None else synthesis.voice_prompt_codes(codec, request)
    return len(synthesis.prompt_ids(llasa, request, prompt_codes, 10_000)) + room


def synthesize_one(llasa, codec, request, **options) -> synthesis.Clip | Skipped:
    [outcome] = synthesis.synthesize(llasa, codec, [request], SamplingOptions(**options), progress=False)
    return outcome


def bias_end(monkeypatch, llasa, min_new_tokens: int = 0):
    """Make <|SPEECH_GENERATION_END|> the model's certain choice once `min_new_tokens` tokens are out."""
    config = llasa.model.generation_config
    monkeypatch.setattr(config, "sequence_bias", [[[llasa.vocab.speech_end_id], 1000.0]])
    monkeypatch.setattr(config, "min_new_tokens", min_new_tokens)


class TestLoadModel:
    def test_end_marker_stops_generation(self, llasa, tiny_tokenizer):
        # <|SPEECH_GENERATION_END|> and <|eot_id|> are both stop ids, looked up in the tokenizer.
        assert llasa.vocab.speech_end_id == tiny_tokenizer.convert_tokens_to_ids(SPEECH_GENERATION_END)
        assert {llasa.vocab.speech_end_id, llasa.vocab.eot_id} <= set(llasa.eos_ids)
        assert llasa.tokenizer.padding_side == "left"

    def test_prompt_is_the_shared_rendering(self, llasa, tiny_tokenizer):
        # The prompt ids are the shared module's chat rendering (the one train.py uses), without a second BOS.
        ids = synthesis.prompt_ids(llasa, Request("a", "Hello world."), None, 2048)
        expected = tiny_tokenizer.apply_chat_template(
            build_messages("Hello world."), continue_final_message=True, date_string="26 Jul 2024", tokenize=False
        )
        assert tiny_tokenizer.decode(ids) == expected
        assert ids.count(tiny_tokenizer.bos_token_id) == 1


class TestReadInputFile:
    def test_plain_text(self, tmp_path):
        # One text per line; blank lines are ignored and ids are zero-padded line numbers.
        path = tmp_path / "texts.txt"
        path.write_text("Hello world.\n\nSecond text.\n")
        requests, skipped = synthesis.read_input_file(path)
        assert [(r.id, r.text) for r in requests] == [("0001", "Hello world."), ("0003", "Second text.")]
        assert skipped == []

    def test_jsonl_with_bad_lines(self, tmp_path):
        # Bad lines (not JSON, empty text, reused id, id with a slash) are reported by line and skipped.
        path = tmp_path / "list.jsonl"
        rows = [
            '{"id": "a", "text": "Hi.", "prompt_wav": "voice.wav", "prompt_text": "Hey."}',
            "{not json",
            '{"id": "b", "text": "  "}',
            '{"id": "a", "text": "Again."}',
            '{"id": "x/y", "text": "Slash."}',
            '{"text": "No id."}',
        ]
        path.write_text("\n".join(rows) + "\n")
        requests, skipped = synthesis.read_input_file(path)
        assert [r.id for r in requests] == ["a", "0006"]
        assert requests[0].prompt_wav == str(tmp_path / "voice.wav")  # relative to the list's folder
        assert requests[0].prompt_text == "Hey."
        reasons = [s.reason for s in skipped]
        assert [reason.split(":")[0] for reason in reasons] == [f"list.jsonl line {n}" for n in (2, 3, 4, 5)]
        assert "not valid JSON" in reasons[0] and "text is empty" in reasons[1]
        assert "used by an earlier line" in reasons[2] and "cannot name a file" in reasons[3]

    def test_seedtts_list(self, tmp_path):
        # Seed-TTS-eval's id|prompt_text|prompt_wav|text, detected from its lines.
        path = tmp_path / "meta.txt"
        path.write_text("utt1|Prompt words.|prompt-wavs/utt1.wav|Target words.\nutt2|P.|/abs/p.wav|T.\n")
        requests, _ = synthesis.read_input_file(path)
        assert requests[0] == Request(
            "utt1", "Target words.", str(tmp_path / "prompt-wavs/utt1.wav"), "Prompt words.", "meta.txt line 1"
        )
        assert requests[1].prompt_wav == "/abs/p.wav"


class TestSynthesize:
    def test_single_text_length(self, llasa, codec, tmp_path, caplog):
        # A text without END within its budget: warned about, and every generated code decoded to 320 samples.
        request = Request("hello", "Hello world.")
        with caplog.at_level(logging.WARNING, logger="llasa"):
            clip = synthesize_one(llasa, codec, request, max_length=room_for(llasa, request), seed=0)
        best = clip.best
        assert not best.ended and len(best.codes) + best.n_dropped == ROOM
        assert len(best.waveform) == len(best.codes) * SAMPLES_PER_TOKEN
        assert f"no {SPEECH_GENERATION_END} within {ROOM} tokens" in caplog.text
        path = synthesis.write_clip(clip, tmp_path / "hello.wav")
        audio, rate = sf.read(path)
        assert rate == 16000 and len(audio) == len(best.codes) * SAMPLES_PER_TOKEN

    def test_stops_at_end_marker(self, llasa, codec, monkeypatch):
        # Once END is the likeliest token (after 3 tokens), generation stops there: 3 codes, ended, no warning
        # (speech-only sampling, which would hold END back until 21 codes, is off).
        bias_end(monkeypatch, llasa, min_new_tokens=3)
        request = Request("a", "Hello world.")
        max_length = room_for(llasa, request, room=50)
        clip = synthesize_one(llasa, codec, request, max_length=max_length, seed=0, speech_only=False)
        assert clip.best.ended and len(clip.best.codes) == 3
        assert len(clip.best.waveform) == 3 * SAMPLES_PER_TOKEN

    def test_voice_cloning_cuts_the_prompt(self, llasa, codec):
        # The prompt (22.05 kHz stereo FLAC, resampled) leads the generation; only the new speech is output, unless
        # keep_prompt puts the prompt's decoded audio back in front.
        request = Request(
            "clone", "Hello world.", str(DATA / "stella_en_us.flac"), "Please call Stella and ask her to come."
        )
        prompt_codes = synthesis.voice_prompt_codes(codec, request)
        assert len(prompt_codes) == len(load_audio(request.prompt_wav)) // SAMPLES_PER_TOKEN + 1
        ids = synthesis.prompt_ids(llasa, request, prompt_codes, 10_000)
        assert ids[-len(prompt_codes) :] == llasa.vocab.codes_to_ids(prompt_codes)  # the prompt's speech tokens
        clip = synthesize_one(llasa, codec, request, max_length=len(ids) + ROOM, seed=0)
        n_codes = len(clip.best.codes)
        assert 0 < n_codes <= ROOM
        assert len(clip.waveform()) == n_codes * SAMPLES_PER_TOKEN
        assert len(clip.waveform(keep_prompt=True)) == (len(prompt_codes) + n_codes) * SAMPLES_PER_TOKEN

    def test_each_row_gets_its_own_budget(self, llasa, codec):
        # In one left-padded batch, each text may generate max_length - its own prompt length tokens.
        requests = [Request("short", "Hi."), Request("long", "The quick brown fox jumps over the lazy dog.")]
        lengths = [len(synthesis.prompt_ids(llasa, r, None, 10_000)) for r in requests]
        max_length = max(lengths) + 4
        outcomes = list(
            synthesis.synthesize(
                llasa, codec, requests, SamplingOptions(max_length=max_length, seed=0), batch_size=2, progress=False
            )
        )
        generated = [len(o.best.codes) + o.best.n_dropped for o in outcomes]
        assert generated == [max_length - length for length in lengths]

    def test_seed_reproducibility(self, llasa, codec):
        # The same seed gives the same codes; another seed gives others.
        request = Request("a", "Hello world.")
        max_length = room_for(llasa, request)
        first, again, other = (
            synthesize_one(llasa, codec, request, max_length=max_length, seed=seed).best.codes for seed in (7, 7, 8)
        )
        assert first == again
        assert first != other

    def test_zero_speech_tokens(self, llasa, codec, monkeypatch):
        # END as the first token: no speech, so the request is Skipped with a clear reason (no audio to write).
        bias_end(monkeypatch, llasa)
        request = Request("a", "Hello world.", source="--text")
        outcome = synthesize_one(llasa, codec, request, max_length=room_for(llasa, request), seed=0, speech_only=False)
        assert isinstance(outcome, Skipped)
        assert outcome.reason.startswith("--text: the model generated no speech tokens")

    def test_no_room_and_missing_prompt(self, llasa, codec):
        # A prompt filling max_length and a missing prompt wav are Skipped with the fix in the reason.
        request = Request("long", "Hello world.")
        no_room = synthesize_one(llasa, codec, request, max_length=room_for(llasa, request, room=0))
        assert isinstance(no_room, Skipped) and "leaving no room for speech" in no_room.reason
        missing = synthesize_one(llasa, codec, Request("m", "Hi.", "nowhere.wav", "Hey."), max_length=500)
        assert isinstance(missing, Skipped) and "Failed to load audio nowhere.wav" in missing.reason


class TestBestOfN:
    def test_keeps_the_highest_score(self, llasa, codec, tmp_path):
        # A scorer we control (reward = the clip's mean sample, None for the first): the kept candidate is the
        # argmax, and every candidate's scores go to <id>.json.
        calls = []

        def scorer(waveforms, texts, columns):
            calls.append(texts)
            assert columns == {}  # no voice prompt: nothing for the speaker similarity to compare with
            return [{"reward": None if i == 0 else float(np.mean(w))} for i, w in enumerate(waveforms)]

        request = Request("bon", "Hello world.")
        [clip] = synthesis.synthesize_batch(
            llasa, codec, [request], SamplingOptions(max_length=room_for(llasa, request)), num_samples=4, scorer=scorer
        )
        means = [float(np.mean(c.waveform)) for c in clip.candidates]
        assert calls == [["Hello world."] * 4]
        assert len({tuple(c.codes) for c in clip.candidates}) > 1  # the candidates differ
        assert clip.chosen == 1 + int(np.argmax(means[1:]))
        synthesis.write_clip(clip, tmp_path / "bon.wav")
        record = json.loads((tmp_path / "bon.json").read_text())
        assert record["chosen"] == clip.chosen
        assert [c["reward"] for c in record["candidates"]] == [None, *means[1:]]

    def test_whisper_reward(self, llasa, codec, whisper_reward_config):
        # The real reward (Whisper tiny.en) scores each candidate; the kept one has the highest reward.
        scorer = synthesis.load_scorer(whisper_reward_config, device="cpu")
        request = Request("bon", "Hello world.")
        [clip] = synthesis.synthesize_batch(
            llasa, codec, [request], SamplingOptions(max_length=room_for(llasa, request), seed=0), 2, scorer
        )
        rewards = [score["reward"] for score in clip.scores]
        assert all(0 <= reward <= 1 for reward in rewards)
        assert clip.chosen == int(np.argmax(rewards))
        assert {"wer", "nll", "transcript"} <= set(clip.scores[0])


class TestCommandLine:
    def test_reference_command(self, llasa, codec, tiny_llasa_dir, tiny_codec_dir, tmp_path):
        # The reference's dashed flags run end to end; the output matches the API's clip for the same seed.
        request = Request("gen", "Hello world from Llasa with GRPO.")
        max_length = room_for(llasa, request)
        output = tmp_path / "gen_grpo.wav"
        inference.main(
            ["--llasa-id", str(tiny_llasa_dir), "--codec-id", str(tiny_codec_dir), "--text", request.text]
            + ["--output", str(output), "--max-length", str(max_length), "--temperature", "0.8", "--top-p", "1.0"]
            + ["--device", "cpu", "--seed", "0"]
        )
        audio, rate = sf.read(output)
        clip = synthesize_one(llasa, codec, request, max_length=max_length, seed=0)
        assert rate == 16000 and len(audio) == len(clip.best.codes) * SAMPLES_PER_TOKEN
        # 16-bit PCM: the random codec's peaks beyond full scale are clipped.
        np.testing.assert_allclose(audio, np.clip(clip.best.waveform, -1, 1), atol=2 / 32768)

    def test_flag_spellings(self):
        # Dashes, underscores and --model_name_or_path all reach the same options.
        dashed = inference.parse_args(["--llasa-id", "m", "--text", "t", "--max-length", "64", "--top-p", "0.9"])
        underscored = inference.parse_args(
            ["--model_name_or_path", "m", "--text", "t", "--max_length", "64", "--top_p", "0.9"]
        )
        assert dashed[0].model_name_or_path == underscored[0].model_name_or_path == "m"
        assert dashed[1] == underscored[1] == SamplingOptions(max_length=64, top_p=0.9)

    def test_bad_flag_combinations(self, capsys):
        # Best-of-N without a verifier and half a voice prompt are refused with the fix.
        with pytest.raises(SystemExit):
            inference.parse_args(["--llasa-id", "m", "--text", "t", "--num_samples", "4"])
        assert "--num_samples > 1 needs --reward_config" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            inference.parse_args(["--llasa-id", "m", "--text", "t", "--prompt_wav", "a.wav"])
        assert "needs both --prompt_wav and --prompt_text" in capsys.readouterr().err

    def test_batch_file_with_a_bad_line(self, llasa, codec, tmp_path, monkeypatch, caplog):
        # Two good lines are written; the line whose prompt wav is missing is reported, skipped and counted.
        monkeypatch.setattr(inference, "load_model", lambda *args, **kwargs: llasa)
        monkeypatch.setattr(inference, "load_codec", lambda *args, **kwargs: codec)
        rows = [
            {"id": "one", "text": "Hello world."},
            {"id": "bad", "text": "Hi.", "prompt_wav": "missing.wav", "prompt_text": "Hey."},
            {"id": "two", "text": "Good bye.", "prompt_wav": str(DATA / "fox_en_us.wav"), "prompt_text": "Fox."},
        ]
        path = tmp_path / "list.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        prompt_length = room_for(llasa, Request("two", "Good bye.", rows[2]["prompt_wav"], "Fox."), codec, room=0)
        output_dir = tmp_path / "out"
        with caplog.at_level(logging.INFO, logger="llasa"):
            inference.main(
                ["--llasa-id", "tiny", "--input_file", str(path), "--output_dir", str(output_dir), "--batch_size", "3"]
                + ["--max_length", str(prompt_length + ROOM), "--seed", "0", "--device", "cpu"]
            )
        # Each clip has its codes and prompt beside it (what preference data trains on).
        written = sorted(p.name for p in output_dir.iterdir())
        assert written == [RECORD_FILE, "one.codes.json", "one.wav", "two.codes.json", "two.wav"]
        assert f"Skipped list.jsonl line 2: Failed to load audio {tmp_path / 'missing.wav'}" in caplog.text
        assert f"Wrote 2 clips to {output_dir}; skipped 1." in caplog.text

    def test_zero_speech_tokens_writes_nothing(self, llasa, codec, tmp_path, monkeypatch):
        # No speech generated (END certain, speech-only sampling off with --no-speech-only): the command exits with
        # the reason and leaves no wav behind.
        bias_end(monkeypatch, llasa)
        monkeypatch.setattr(inference, "load_model", lambda *args, **kwargs: llasa)
        monkeypatch.setattr(inference, "load_codec", lambda *args, **kwargs: codec)
        output = tmp_path / "empty.wav"
        argv = ["--llasa-id", "tiny", "--text", "Hello.", "--output", str(output), "--max_length", "200"]
        with pytest.raises(SystemExit, match="the model generated no speech tokens"):
            inference.main([*argv, "--no-speech-only"])
        assert not output.exists()


class TestSpeechOnly:
    def test_processor_masks_all_but_speech_and_end_and_end_before_each_rows_minimum(self, llasa):
        # Row 0 must make 3 speech tokens before END, row 1 none: after 2 generated tokens only speech ids stay
        # finite in row 0, speech ids and END in row 1; at 3 tokens END opens in row 0 too.
        import torch

        from llasa.sampling import SpeechOnlyLogitsProcessor

        vocab, size = llasa.vocab, len(llasa.tokenizer)
        processor = SpeechOnlyLogitsProcessor(vocab, [3, 0])
        processor(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, size))  # the prompt: 5 tokens wide
        scores = processor(torch.zeros(2, 7, dtype=torch.long), torch.zeros(2, size))
        speech = set(range(vocab.first_speech_id, vocab.first_speech_id + 65536))
        assert set(torch.isfinite(scores[0]).nonzero().flatten().tolist()) == speech
        assert set(torch.isfinite(scores[1]).nonzero().flatten().tolist()) == speech | {vocab.speech_end_id}
        scores = processor(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, size))
        assert (
            torch.isfinite(scores[:, vocab.speech_end_id]).all() and not torch.isfinite(scores[:, vocab.eot_id]).any()
        )

    def test_minimum_is_a_share_of_the_expected_length(self, llasa):
        # "Hello world." has 10 letters: 10 / 12 per second = 0.833 s = ceil(41.7) = 42 tokens; half of it is 21;
        # a known duration of 2 s gives 100 tokens, half 50
        from llasa.sampling import SpeechOnly

        speech_only = SpeechOnly(llasa.vocab, 0.5)
        assert speech_only.min_tokens("Hello world.") == 21
        assert speech_only.min_tokens("Hello world.", 2.0) == 50
        assert SpeechOnly(llasa.vocab, 0.0).min_tokens("Hello world.") == 0
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            SpeechOnly(llasa.vocab, 1.5)

    def test_no_dropped_token_and_no_early_end_with_it_on(self, llasa, monkeypatch):
        # The random tiny model draws from its whole vocabulary: with speech-only sampling off, most of its tokens
        # are not speech (dropped) and END, made certain, ends every row at once (no speech); on, every token is a
        # speech code and END comes right at each row's minimum: 21 for "Hello world.", and 15 letters / 12 per
        # second = 1.25 s = 63 tokens with END, half of 62 = 31 for the longer text
        bias_end(monkeypatch, llasa)
        texts = ["Hello world.", "Hello there, world!!"]
        requests = [Request(str(i), text) for i, text in enumerate(texts)]
        prompts = [synthesis.prompt_ids(llasa, request, None, 2048) for request in requests]
        options = SamplingOptions(max_length=max(map(len, prompts)) + 40, seed=0)
        on = synthesis.generate_speech(llasa, prompts, options, 2, texts)
        off = synthesis.generate_speech(llasa, prompts, replace(options, speech_only=False), 2, texts)
        assert [[len(s.codes) for s in samples] for samples in on] == [[21, 21], [31, 31]]
        assert all(s.ended and s.n_dropped == 0 for samples in on for s in samples)
        assert all(s.codes == [] for samples in off for s in samples)

    def test_dropped_and_no_speech_shares_on_and_off(self, tiny_llasa_dir):
        # The tiny model made to stray (text tokens and early ends likely, benchmarks/speech_only.py): with
        # speech-only sampling the reward's dropped_tokens and no_speech are 0; without it, text tokens are drawn in
        # the speech and some completions end before any speech
        from benchmarks.speech_only import compare, stray

        llasa = synthesis.load_model(str(tiny_llasa_dir), device="cpu")  # its own copy: stray() changes the head
        stray(llasa, text_offset=3.25, end_offset=6.2)
        shares = compare(llasa, num_samples=8, room=40, seed=0)
        assert shares["on"]["dropped_tokens"] == 0.0 and shares["on"]["no_speech"] == 0.0
        assert shares["off"]["dropped_tokens"] > 1.0 and shares["off"]["no_speech"] > 0.0
        assert shares["on"]["codes"] > shares["off"]["codes"]
