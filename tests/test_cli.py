"""The scripts' one parsing system (llasa/cli.py): `--config file.yaml` for every script and command, one boolean
style, dashed and underscored flags, the nearest valid spelling for an unknown flag, and the reference
implementation's flags mapped or refused with the reason."""

import re

import pytest

import create_dataset
import evaluate
import inference
import listen
import reward_whisper
import train
import train_dpo
from llasa.synthesis import SamplingOptions


def write_yaml(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(parse, argv, capsys) -> str:
    """The usage error a parse ends in (argparse's exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        parse(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


class TestConfigFiles:
    def test_every_script_reads_its_flags_from_yaml(self, tmp_path):
        # Each script and command takes --config; a flag on the command line wins over the file.
        config = write_yaml(tmp_path / "c.yaml", "dataset: d\noutput_dir: out\nmax_duration: 12.5\n")
        assert create_dataset.parse_options(["--config", config]).max_duration == 12.5
        assert create_dataset.parse_options(["--config", config, "--max_duration", "9"]).max_duration == 9

        config = write_yaml(tmp_path / "i.yaml", "model_name_or_path: m\ntext: hi\ntop_k: 7\nspeech_only: false\n")
        arguments, sampling, models = inference.parse_args(["--config", config, "--device", "cpu"])
        assert (arguments.text, sampling.top_k, sampling.speech_only, models.device) == ("hi", 7, False, "cpu")

        config = write_yaml(tmp_path / "r.yaml", "audio: [a.wav]\ntext: [hello]\nlanguage: de\n")
        arguments, overrides = reward_whisper.parse_args(["--config", config])
        assert (arguments.audio, overrides.language, overrides.device) == (["a.wav"], "de", None)

        config = write_yaml(tmp_path / "e.yaml", "run_dir: runs/x\nsmoothing: 0.5\n")
        assert evaluate.parse_args(["curves", f"--config={config}"])[1][0].smoothing == 0.5

        config = write_yaml(tmp_path / "l.yaml", "db: s.sqlite\noutput_dir: res\nbootstrap: 30\n")
        assert listen.parse_args(["results", "--config", config])[1][0].bootstrap == 30

    def test_an_unknown_yaml_key_is_named_with_the_nearest_flag(self, tmp_path, capsys):
        config = write_yaml(tmp_path / "c.yaml", "run_dir: x\nsmoothin: 0.5\n")
        message = error_of(evaluate.parse_args, ["curves", "--config", config], capsys)
        assert message.endswith("--config: unknown key 'smoothin': did you mean --smoothing?")

    def test_a_missing_config_file_is_a_usage_error(self, tmp_path, capsys):
        message = error_of(inference.parse_args, ["--config", str(tmp_path / "none.yaml")], capsys)
        assert "--config:" in message and "none.yaml" in message


class TestSpellings:
    def test_booleans_are_spelt_one_way(self):
        # --no_flag, --no-flag and --flag false are the same; --flag alone is true.
        base = ["--llasa_id", "m", "--text", "t"]
        spellings = (["--no_speech_only"], ["--no-speech-only"], ["--speech_only", "false"], ["--speech-only", "0"])
        assert {inference.parse_args(base + flags)[1].speech_only for flags in spellings} == {False}
        assert inference.parse_args(base + ["--speech_only"])[1].speech_only is True
        script_args = train.parse_args(["--model_name_or_path", "m", "--dataset", "d", "--reward_config", "r"])[0]
        assert script_args.speech_only is True
        argv = ["--model_name_or_path", "m", "--dataset", "d", "--reward_config", "r", "--no-speech-only"]
        assert train.parse_args(argv)[0].speech_only is False

    @pytest.mark.parametrize(
        ("parse", "argv", "expected"),
        [
            (inference.parse_args, ["--llasa-id", "m", "--text", "t", "--tempreature", "1"], "--temperature"),
            (inference.parse_args, ["--llasa-id", "m", "--text", "t", "--top-p=0.5", "--topk", "3"], "--top_k"),
            (create_dataset.parse_options, ["--dataset", "d", "--min-durations", "1"], "--min-duration"),
            (train.parse_args, ["--model-id", "m", "--dataset", "d", "--reward_config", "r", "--bta", "0"], "--beta"),
            (evaluate.parse_args, ["profile", "--run-dir", "x", "--keep_frist"], "--keep_first"),
        ],
    )
    def test_an_unknown_flag_names_the_nearest(self, parse, argv, expected, capsys):
        message = error_of(parse, argv, capsys)
        assert message.endswith(f"did you mean {expected}?"), message

    def test_an_unknown_command_names_the_nearest(self, capsys):
        with pytest.raises(SystemExit) as stop:
            listen.parse_args(["result", "--db", "x"])
        assert stop.value.code == 2
        assert capsys.readouterr().err.strip().endswith("unknown command 'result': did you mean results?")

    def test_nothing_near_points_to_help(self, capsys):
        message = error_of(inference.parse_args, ["--llasa-id", "m", "--text", "t", "--zzz"], capsys)
        assert message.endswith("unrecognised argument --zzz (see --help)")


class TestReferenceFlags:
    def test_sampling_rate_is_accepted_at_16k_and_refused_otherwise(self, capsys):
        arguments, sampling, _ = inference.parse_args(["--llasa-id", "m", "--text", "t", "--sampling-rate", "16000"])
        assert (arguments.model_name_or_path, sampling) == ("m", SamplingOptions())
        message = error_of(
            inference.parse_args, ["--llasa-id", "m", "--text", "t", "--sampling-rate", "24000"], capsys
        )
        assert "--sampling_rate 24000: XCodec2 reads and writes 16000 Hz audio only" in message

    def test_renamed_flags_are_mapped_with_a_note(self, capsys):
        script_args, _, model_args = train.parse_args(["--model-id", "m", "--dataset-id", "d", "--reward_config", "r"])
        assert (model_args.model_name_or_path, script_args.dataset) == ("m", "d")
        assert "note: --model-id is spelt --model_name_or_path here." in capsys.readouterr().err

    def test_create_dataset_config_names_a_hub_subset_unless_it_is_yaml(self, tmp_path):
        assert create_dataset.parse_options(["--dataset", "d", "--config", "clean"]).dataset_config == "clean"
        config = write_yaml(tmp_path / "c.yaml", "dataset: d\ndataset_config: other\n")
        assert create_dataset.parse_options(["--config", config]).dataset_config == "other"


@pytest.mark.parametrize(
    ("parse", "argv"),
    [
        (create_dataset.parse_options, []),
        (train.parse_args, []),
        (train_dpo.parse_args, []),
        (inference.parse_args, []),
        (reward_whisper.parse_args, []),
        *((evaluate.parse_args, [command]) for command in evaluate.COMMANDS),
        *((listen.parse_args, [command]) for command in listen.COMMANDS),
    ],
)
def test_every_help_shows_config_and_both_spellings(parse, argv, capsys):
    # --help lists --config, and every flag of several words in both spellings (--output_dir, --output-dir).
    with pytest.raises(SystemExit) as stop:
        parse([*argv, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--config FILE.yaml" in text
    option_lines = [line.strip() for line in text.splitlines() if line.startswith("  -")]
    flags = {flag for line in option_lines for flag in re.findall(r"(?:^|, )(--[\w-]+)", line)}
    underscored = {flag for flag in flags if "_" in flag}
    assert len(flags) >= 3 and all(flag.replace("_", "-") in flags for flag in underscored)
