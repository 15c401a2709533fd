"""The WavLM speaker back end of llasa.scores (transformers' WavLMForXVector), on a tiny random one saved to disk and
loaded back through the real code path, alone and as the reward's speaker_similarity component."""

from pathlib import Path

import numpy as np
import pytest

from llasa.audio import load_audio
from llasa.rewards import load_reward
from llasa.scores import SpeakerSimilarityScorer
from testing.tiny_wavlm import XVECTOR_DIM

DATA = Path(__file__).parent / "data"
CLIPS = ("fox_en_us.wav", "fox_en_f3.wav", "rainbow_en_us.wav")


@pytest.fixture(scope="module")
def waveforms():
    return [load_audio(DATA / name) for name in CLIPS]


def wavlm_scorer(model: str, **options) -> SpeakerSimilarityScorer:
    return SpeakerSimilarityScorer(backend="wavlm", model=model, device="cpu", **options)


class TestWavlmScorer:
    def test_same_clip_twice_has_cosine_one(self, tiny_wavlm, waveforms):
        # a clip against itself: cosine 1, for each clip
        cosines = wavlm_scorer(tiny_wavlm).similarities(waveforms, waveforms)
        assert cosines == pytest.approx([1.0] * len(waveforms), abs=1e-5)

    def test_embeddings_are_unit_vectors_of_the_xvector_size(self, tiny_wavlm, waveforms):
        # one vector of xvector_output_dim per clip, unit length; different clips give different vectors
        embeddings = wavlm_scorer(tiny_wavlm).embed(waveforms)
        assert [embedding.shape for embedding in embeddings] == [(XVECTOR_DIM,)] * len(waveforms)
        assert [float(np.linalg.norm(embedding)) for embedding in embeddings] == pytest.approx([1.0] * 3)
        assert float(np.dot(embeddings[0], embeddings[2])) < 0.9999

    def test_batch_equals_one_at_a_time(self, tiny_wavlm, waveforms):
        # clips of different lengths in one call give the cosines each gives alone
        scorer = wavlm_scorer(tiny_wavlm)
        references = [waveforms[2], waveforms[2], waveforms[0]]
        together = scorer.similarities(waveforms, references)
        alone = [scorer.similarities([wav], [ref])[0] for wav, ref in zip(waveforms, references, strict=True)]
        assert together == pytest.approx(alone, abs=1e-6)
        assert all(-1.0 <= cosine <= 1.0 for cosine in together)

    def test_unusable_clips_are_none(self, tiny_wavlm, waveforms):
        # a missing reference, silence and a clip under min_seconds are not scored
        scorer = wavlm_scorer(tiny_wavlm)
        cosines = scorer.similarities(
            [waveforms[0], np.zeros(16000, np.float32), waveforms[0][:4000]], [None, waveforms[0], waveforms[0]]
        )
        assert cosines == [None, None, None]

    @pytest.mark.parametrize(
        "options, message",
        [
            ({"backend": "ecapa"}, "Unknown speaker backend 'ecapa'"),
            ({"model": "microsoft/wavlm-base-plus-sv"}, "resemblyzer ships its own weights"),
        ],
    )
    def test_bad_options_are_refused(self, options, message):
        with pytest.raises(ValueError, match=message):
            SpeakerSimilarityScorer(**options)

    def test_missing_model_names_it(self, tmp_path, waveforms):
        # an empty folder is no model: the error names the folder
        with pytest.raises(RuntimeError, match=f"WavLM speaker-verification model '{tmp_path}'"):
            wavlm_scorer(str(tmp_path)).embed(waveforms[:1])


class TestWavlmComponent:
    def test_reward_component_scores_with_wavlm(self, tiny_wavlm, waveforms):
        # the speaker_similarity component takes "backend" and "model": a clip against itself scores 1 (cosine 1),
        # against another clip its cosine mapped from floor 0
        reward = load_reward(
            {
                "asr_model": "/no/such/model.pt",
                "components": {
                    "speaker_similarity": {"weight": 1.0, "backend": "wavlm", "model": tiny_wavlm, "floor": 0.0}
                },
            },
            device="cpu",
        )
        references = [str(DATA / CLIPS[0]), str(DATA / CLIPS[2])]
        scored = reward.score_audio(waveforms[:2], ["a", "b"], {"reference_audio": references})
        assert scored[0].metrics["speaker_cosine"] == pytest.approx(1.0, abs=1e-5)
        assert scored[0].reward == pytest.approx(1.0, abs=1e-5)
        cosine = wavlm_scorer(tiny_wavlm).similarities([waveforms[1]], [waveforms[2]])[0]
        assert scored[1].metrics["speaker_cosine"] == pytest.approx(cosine, abs=1e-6)
        assert scored[1].reward == pytest.approx(max(cosine, 0.0), abs=1e-6)
