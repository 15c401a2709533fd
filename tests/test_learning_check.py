"""The learning check's short version: GRPO through train.py (speech-only sampling, cut completions masked) raises
the duration score of a tiny Llasa-shaped policy whose END is likely enough for its lengths to vary."""

import pytest

from benchmarks.learning_check import RISE, check


@pytest.mark.slow
def test_grpo_raises_the_duration_score(tmp_path):
    # A sign error, a mask that zeroes the loss or a bias that blocks the gradient would leave the score flat or
    # falling: here the mean of the last 5 steps is at least RISE above the first 5, and every step has a gradient.
    [curve] = check(["full"], steps=10, learning_rate=1e-2, work_dir=tmp_path, report=lambda line: None)
    assert curve.last - curve.first >= RISE, curve.scores
    assert all(norm > 0 for norm in curve.grad_norms), curve.grad_norms
