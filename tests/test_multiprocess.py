"""train.py under `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): two GRPO processes on the tiny models with the
real reward (Whisper tiny.en through faster-whisper, the tiny codec), then a resumed run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "A rainbow appeared after the summer rain."]


def launch(output_dir: Path, dataset: Path, model_dir, reward: Path, steps: int, *extra: str):
    accelerate = str(Path(sys.executable).parent / "accelerate")
    # accelerate 1.15 runs `--cpu` as one process (several need mpirun); torchrun's launcher (`--multi_gpu`) on a
    # machine without a visible GPU starts two CPU processes, which --use_cpu puts on gloo.
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29617"]
    command += [str(REPO / "train.py"), "--model_name_or_path", str(model_dir), "--use_cpu"]
    command += ["--dataset", str(dataset), "--reward_config", str(reward), "--output_dir", str(output_dir)]
    command += ["--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none", "--seed", "0"]
    command += ["--num_generations", "4", "--per_device_train_batch_size", "2", "--max_completion_length", "8"]
    command += ["--max_steps", str(steps), "--logging_steps", "1", "--save_steps", "2", "--disable_tqdm", "true"]
    command += ["--multi_objective_aggregation", "normalize_then_sum", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=output_dir.parent, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


@pytest.mark.slow
def test_two_processes_train_save_and_resume(tiny_llasa_dir, tiny_codec_dir, tmp_path):
    # Two ranks, one prompt x 4 generations per step (2 per rank), the per-component Whisper reward with TRL's
    # normalize_then_sum: each rank loads Whisper once; the main process alone writes the samples (2 clips) and the
    # checkpoint, which reloads and generates; the completions table holds both ranks' 4 completions with their
    # transcripts; a second launch resumes from checkpoint-2 and ends at step 3.
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llasa import render_prompt
    from testing.tiny_models import write_demo_reward_config

    reward = write_demo_reward_config(tmp_path / "reward.json", tiny_codec_dir)
    config = json.loads(reward.read_text())
    reward.write_text(json.dumps({**config, "per_component": True}))
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    out = tmp_path / "run"
    started = time.perf_counter()
    log = launch(out, dataset, tiny_llasa_dir, reward, 2, "--sample_every_steps", "1", "--num_samples_to_save", "2")
    first = time.perf_counter() - started

    assert log.count("Loading the faster-whisper model") == 2, log[-3000:]
    assert log.count("Llasa GRPO\n") == 1  # the start-up summary comes from the main process only
    assert sorted(p.name for p in (out / "samples" / "step-1").iterdir()) == [
        "sample-0.codes.json",
        "sample-0.wav",
        "sample-1.codes.json",
        "sample-1.wav",
        "samples.jsonl",
    ]
    table = pd.read_parquet(out / "completions" / "completions_00001.parquet")
    assert len(table) == 4 and table["completion"].map(len).gt(0).all()
    assert "transcript" in table.columns and {"wer", "nll"} <= set(table.columns)
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and "rewards/wer/mean" in state["log_history"][0]
    model = AutoModelForCausalLM.from_pretrained(out / "checkpoint-2")
    tokenizer = AutoTokenizer.from_pretrained(out / "checkpoint-2")
    prompt = tokenizer(render_prompt(tokenizer, "Hi."), add_special_tokens=False, return_tensors="pt")
    assert model.generate(**prompt, max_new_tokens=2, do_sample=True).shape[1] == prompt["input_ids"].shape[1] + 2

    log = launch(
        out, dataset, tiny_llasa_dir, reward, 3, "--resume_from_checkpoint", "true", "--sample_every_steps", "0"
    )
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    print(f"first launch (2 steps) {first:.0f} s; both launches {time.perf_counter() - started:.0f} s")
