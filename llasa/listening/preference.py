"""The learned preference reward: a Bradley-Terry utility over frozen speech features, trained on stored judgments,
saved as a folder (config.json + model.safetensors) and loaded back to score clips in [0, 1]."""

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE, usable_waveform
from llasa.scores import SpeakerSimilarityScorer

logger = logging.getLogger(__name__)

MIN_SECONDS = 0.3  # a shorter clip (or a silent one) is not scored
FRAME_LENGTH = 1024  # 64 ms analysis frames, 20 ms hops (the codec's token rate)
HOP_LENGTH = 320
PITCH_FMIN, PITCH_FMAX = 60.0, 500.0  # Hz, speech F0 range for YIN
VOICED_DB = -35.0  # frames within this many dB of the clip's loudest are treated as speech
PERIODICITY = 0.6  # normalised autocorrelation at one F0 period above which a frame is voiced
OCTAVE_MEDIAN_FRAMES = 5  # F0 more than a semitone off its 5-frame median is an octave error, dropped
FEATURE_CHUNK = 64  # clips featurised together (resemblyzer's windows go through the encoder at once)
EMBEDDINGS = ("resemblyzer", "none")  # frozen embedding appended to the acoustic measures
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_FORMAT = "llasa-preference-bt"
ACOUSTIC_FEATURES = (
    "log_duration",
    "rms_db_mean",
    "rms_db_std",
    "dynamic_range_db",  # loudest speech frames over the quietest frames: low for a noisy clip
    "flatness_speech",  # spectral flatness (0 tonal .. 1 white noise) over speech frames
    "flatness_quiet",  # ... over the quietest frames: the background
    "centroid_khz",
    "zero_crossing_rate",
    "f0_spread_st",  # robust standard deviation (1.4826 MAD) of F0 in semitones over voiced frames
    "f0_range_st",  # 90th - 10th percentile of F0, semitones
    "f0_delta_st",  # mean absolute frame-to-frame F0 change, semitones
    "voiced_share",
)


# ---------------------------------------------------------------------------------------------------------------------
# Features


@dataclass(frozen=True)
class FeatureConfig:
    """Which frozen features the utility reads: the acoustic measures above, plus an optional embedding."""

    embedding: str = "resemblyzer"  # "resemblyzer" (256-d speaker-encoder embedding) or "none"
    acoustic: bool = True  # the ACOUSTIC_FEATURES measures
    prosody: bool = False  # llasa.prosody's PROSODY_FEATURES: CREPE contour shape, silero-vad timing, syllable rate

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}.")
        if self.embedding == "none" and not (self.acoustic or self.prosody):
            raise ValueError("No features left: keep the acoustic or prosody measures or choose an embedding.")

    def names(self) -> list[str]:
        from llasa.prosody import PROSODY_FEATURES

        names = list(ACOUSTIC_FEATURES) if self.acoustic else []
        names += list(PROSODY_FEATURES) if self.prosody else []
        return names + ([f"resemblyzer_{i}" for i in range(256)] if self.embedding == "resemblyzer" else [])


def usable(waveform) -> np.ndarray | None:
    """The clip as float32 mono, or None if it is too short, silent or not finite."""
    if waveform is None:
        return None
    return usable_waveform(np.asarray(waveform, dtype=np.float32).reshape(-1), MIN_SECONDS)


def acoustic_features(wav: np.ndarray) -> np.ndarray:
    """The ACOUSTIC_FEATURES of one usable 16 kHz clip: loudness, noise and pitch-movement measures."""
    import librosa

    rms = librosa.feature.rms(y=wav, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH)[0]
    db = 20 * np.log10(np.maximum(rms, 1e-6))
    speech = db >= db.max() + VOICED_DB
    quiet = db <= np.percentile(db, 10)
    flatness = librosa.feature.spectral_flatness(y=wav, n_fft=FRAME_LENGTH, hop_length=HOP_LENGTH)[0]
    centroid = librosa.feature.spectral_centroid(y=wav, sr=SAMPLE_RATE, n_fft=FRAME_LENGTH, hop_length=HOP_LENGTH)[0]
    zcr = librosa.feature.zero_crossing_rate(wav, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH)[0]
    semitones, voiced_share = voiced_semitones(wav)
    pitch = [0.0, 0.0, 0.0]
    if semitones.size >= 3:
        low, median, high = np.percentile(semitones, [10, 50, 90])
        spread = 1.4826 * np.median(np.abs(semitones - median))  # robust standard deviation
        pitch = [float(spread), float(high - low), float(np.mean(np.abs(np.diff(semitones))))]
    return np.array(
        [
            math.log(wav.size / SAMPLE_RATE),
            float(db[speech].mean()),
            float(db[speech].std()),
            float(np.percentile(db, 95) - np.percentile(db, 5)),
            float(flatness[speech[: len(flatness)]].mean()),
            float(flatness[quiet[: len(flatness)]].mean()),
            float(centroid.mean() / 1000),
            float(zcr.mean()),
            *pitch,
            voiced_share,
        ],
        dtype=np.float32,
    )


def voiced_semitones(wav: np.ndarray) -> tuple[np.ndarray, float]:
    """F0 in semitones (re 100 Hz) of the clearly periodic frames, and their share of all frames.

    YIN gives an F0 for every frame; a frame counts as voiced when the signal correlates with itself one period
    later (>= PERIODICITY) and its F0 agrees with its neighbours' median (octave errors are dropped). Much faster
    than pYIN, and as close on speech for the spread and range measured here.
    """
    import librosa
    from scipy.signal import medfilt

    f0 = librosa.yin(
        wav, fmin=PITCH_FMIN, fmax=PITCH_FMAX, sr=SAMPLE_RATE, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH
    )
    frames = librosa.util.frame(np.pad(wav, FRAME_LENGTH // 2), frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH)
    n = min(frames.shape[1], len(f0))
    periodicity = np.zeros(n)
    for i in range(n):
        lag = int(round(SAMPLE_RATE / f0[i]))
        x, y = frames[:-lag, i], frames[lag:, i]
        energy = math.sqrt(float(x @ x) * float(y @ y))
        periodicity[i] = float(x @ y) / energy if energy > 0 else 0.0
    semitones = 12 * np.log2(f0[:n] / 100.0)
    steady = np.abs(semitones - medfilt(semitones, OCTAVE_MEDIAN_FRAMES)) < 1.0
    voiced = (periodicity >= PERIODICITY) & steady
    return semitones[voiced], float(voiced.mean()) if n else 0.0


def extract_features(config: FeatureConfig, waveforms: Sequence) -> list[np.ndarray | None]:
    """The feature vector of each 16 kHz clip (None where the clip cannot be scored), FEATURE_CHUNK at a time."""
    vectors: list[np.ndarray | None] = []
    for start in range(0, len(waveforms), FEATURE_CHUNK):
        clips = [usable(waveform) for waveform in waveforms[start : start + FEATURE_CHUNK]]
        present = [i for i, wav in enumerate(clips) if wav is not None]
        parts = {i: [] for i in present}
        if config.acoustic:
            for i in present:
                parts[i].append(acoustic_features(clips[i]))
        if config.prosody and present:
            from llasa.prosody import prosody_features

            for i, vector in zip(present, prosody_features([clips[i] for i in present]), strict=True):
                parts[i].append(vector)
        if config.embedding == "resemblyzer" and present:
            embeddings = SpeakerSimilarityScorer(device="cpu").embed([clips[i] for i in present])
            for i, embedding in zip(present, embeddings, strict=True):
                if embedding is None:  # under half a second of speech after trimming silence
                    del parts[i]
                else:
                    parts[i].append(embedding)
        vectors += [np.concatenate(parts[i]) if i in parts else None for i in range(len(clips))]
    return vectors


# ---------------------------------------------------------------------------------------------------------------------
# The Bradley-Terry utility


@dataclass(frozen=True)
class TrainingOptions:
    """How the utility head is fitted (full-batch AdamW on the pairs' logistic loss)."""

    hidden: int = 0  # 0: a linear utility; > 0: one tanh hidden layer of that width
    steps: int = 500
    learning_rate: float = 0.05
    weight_decay: float = 0.01
    held_out: float = 0.2  # share of items (texts) kept out of training to measure accuracy
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.hidden, int) and self.hidden >= 0):
            raise ValueError(f"hidden must be an integer >= 0, got {self.hidden!r}.")
        if not 0 <= self.held_out < 1:
            raise ValueError(f"held_out must be in [0, 1), got {self.held_out!r}.")
        if self.steps < 1 or self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("steps must be >= 1, learning_rate > 0 and weight_decay >= 0.")


def _head(n_features: int, hidden: int):
    import torch

    if hidden == 0:
        return torch.nn.Linear(n_features, 1)
    return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


@dataclass
class PreferenceModel:
    """utility(clip) = head((features - mean) / std); P(a preferred to b) = sigmoid(utility(a) - utility(b)).
    A clip's reward is sigmoid(utility - reference_utility), the reference being the mean training clip's, so an
    ordinary clip of the training set scores about 0.5."""

    features: FeatureConfig
    mean: np.ndarray
    std: np.ndarray
    head: object  # torch.nn.Module
    hidden: int = 0
    reference_utility: float = 0.0
    metrics: dict = field(default_factory=dict)

    def utilities_of_features(self, vectors: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(((vectors - self.mean) / self.std).astype(np.float32))
            return self.head(x).squeeze(-1).double().numpy()

    def utilities(self, waveforms: Sequence) -> list[float | None]:
        """The utility of each 16 kHz clip; None where it cannot be scored."""
        vectors = extract_features(self.features, waveforms)
        present = [i for i, vector in enumerate(vectors) if vector is not None]
        values: list[float | None] = [None] * len(vectors)
        if present:
            for i, utility in zip(
                present, self.utilities_of_features(np.stack([vectors[i] for i in present])), strict=True
            ):
                values[i] = float(utility)
        return values

    def scores(self, waveforms: Sequence) -> list[float | None]:
        """Rewards in [0, 1]: sigmoid(utility - reference_utility); None for a clip too short, silent or broken."""
        return [None if u is None else self.score_of_utility(u) for u in self.utilities(waveforms)]

    def score_of_utility(self, utility: float) -> float:
        return 1.0 / (1.0 + math.exp(-(utility - self.reference_utility)))

    def save(self, folder) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format": MODEL_FORMAT,
            "features": asdict(self.features),
            "feature_names": self.features.names(),
            "hidden": self.hidden,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "reference_utility": self.reference_utility,
            "sample_rate": SAMPLE_RATE,
            "metrics": self.metrics,
        }
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(
            {name: tensor.contiguous() for name, tensor in self.head.state_dict().items()}, folder / WEIGHTS_NAME
        )
        return folder

    @classmethod
    def load(cls, folder) -> "PreferenceModel":
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"{folder} holds no preference model ({CONFIG_NAME} + {WEIGHTS_NAME}): train one with "
                "`python listen.py train-reward --db ratings.sqlite --output_dir prefs_model`."
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") != MODEL_FORMAT:
            raise ValueError(f"{config_path} is not a preference model (format {config.get('format')!r}).")
        features = FeatureConfig(**config["features"])
        if features.names() != config["feature_names"]:
            raise ValueError(f"{config_path} names features this code does not compute: retrain the model.")
        head = _head(len(config["feature_names"]), config["hidden"])
        head.load_state_dict(load_file(folder / WEIGHTS_NAME))
        head.eval()
        return cls(
            features=features,
            mean=np.asarray(config["mean"], dtype=np.float32),
            std=np.asarray(config["std"], dtype=np.float32),
            head=head,
            hidden=config["hidden"],
            reference_utility=float(config["reference_utility"]),
            metrics=config.get("metrics", {}),
        )


@dataclass(frozen=True)
class Comparison:
    """One judgment as training data: clips a and b, the target P(a preferred) (1, 0, or 0.5 for "same"), and the
    item (text) it belongs to, which decides the held-out split."""

    a: str
    b: str
    target: float
    item: str


def comparisons_from_judgments(judgments: Sequence[dict]) -> list[Comparison]:
    """Stored judgments (PreferenceStore.judgments()) as comparisons of clip files."""
    rows = []
    for judgment in judgments:
        target = 0.5 if judgment["winner_clip"] is None else float(judgment["winner_clip"] == judgment["clip_a"])
        item = judgment["text"] or f"pair-{judgment['pair_id']}"
        rows.append(Comparison(judgment["path_a"], judgment["path_b"], target, item))
    return rows


def split_items(comparisons: Sequence[Comparison], held_out: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices: whole items go to one side, so held-out accuracy is on texts never trained on."""
    items = sorted({c.item for c in comparisons})
    rng = np.random.default_rng(seed)
    rng.shuffle(items)
    n_test = int(round(held_out * len(items)))
    if held_out > 0 and len(items) >= 2:
        n_test = min(max(n_test, 1), len(items) - 1)
    test_items = set(items[:n_test])
    train = [i for i, c in enumerate(comparisons) if c.item not in test_items]
    test = [i for i, c in enumerate(comparisons) if c.item in test_items]
    return train, test


def pairwise_accuracy(utilities: dict[str, float], comparisons: Sequence[Comparison]) -> tuple[float | None, int]:
    """Share of decided comparisons (not "same") whose preferred clip has the higher utility, and how many."""
    decided = [c for c in comparisons if c.target != 0.5 and c.a in utilities and c.b in utilities]
    if not decided:
        return None, 0
    right = sum((utilities[c.a] > utilities[c.b]) == (c.target == 1.0) for c in decided)
    return right / len(decided), len(decided)


def train_preference_model(
    comparisons: Sequence[Comparison],
    load: Callable[[str], np.ndarray],
    features: FeatureConfig = FeatureConfig(),
    options: TrainingOptions = TrainingOptions(),
) -> PreferenceModel:
    """Fit the utility head on the training items' comparisons and measure held-out pairwise accuracy.

    `load(path)` returns a clip's 16 kHz waveform. Each distinct clip is featurised once; comparisons with a clip
    that cannot be scored are skipped and counted in the metrics.
    """
    import torch

    if not comparisons:
        raise ValueError("No judgment to learn from: rate pairs (listen.py serve) or label them (listen.py ai-label).")
    paths = sorted({path for c in comparisons for path in (c.a, c.b)})
    vectors = dict(zip(paths, extract_features(features, [load(path) for path in paths]), strict=True))
    usable_rows = [c for c in comparisons if vectors[c.a] is not None and vectors[c.b] is not None]
    skipped = len(comparisons) - len(usable_rows)
    if skipped:
        logger.warning(
            "%d of %d judgments involve a clip too short or silent to featurise: skipped.", skipped, len(comparisons)
        )
    train_index, test_index = split_items(usable_rows, options.held_out, options.seed)
    train = [usable_rows[i] for i in train_index]
    test = [usable_rows[i] for i in test_index]
    if not train:
        raise ValueError("No usable judgment is left to train on.")
    train_paths = sorted({path for c in train for path in (c.a, c.b)})
    matrix = np.stack([vectors[path] for path in train_paths])
    mean, std = matrix.mean(axis=0), matrix.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    torch.manual_seed(options.seed)
    head = _head(matrix.shape[1], options.hidden)
    x = torch.from_numpy(((matrix - mean) / std).astype(np.float32))
    index = {path: i for i, path in enumerate(train_paths)}
    a = torch.tensor([index[c.a] for c in train])
    b = torch.tensor([index[c.b] for c in train])
    target = torch.tensor([c.target for c in train], dtype=torch.float32)
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    for _ in range(options.steps):
        optimizer.zero_grad()
        utilities = head(x).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(utilities[a] - utilities[b], target)
        loss.backward()
        optimizer.step()
    head.eval()
    model = PreferenceModel(features, mean.astype(np.float32), std, head, hidden=options.hidden)
    all_paths = sorted({path for c in usable_rows for path in (c.a, c.b)})
    utility = dict(zip(all_paths, model.utilities_of_features(np.stack([vectors[p] for p in all_paths])), strict=True))
    model.reference_utility = float(np.mean([utility[p] for p in train_paths]))
    train_accuracy, n_train = pairwise_accuracy(utility, train)
    test_accuracy, n_test = pairwise_accuracy(utility, test)
    model.metrics = {
        "n_judgments": len(comparisons),
        "n_skipped": skipped,
        "n_train": len(train),
        "n_held_out": len(test),
        "n_train_items": len({c.item for c in train}),
        "n_held_out_items": len({c.item for c in test}),
        "train_accuracy": train_accuracy,
        "held_out_accuracy": test_accuracy,
        "n_held_out_decided": n_test,
        "final_loss": float(loss.item()),
        "options": asdict(options),
    }
    return model


def preference_scores(
    model: PreferenceModel, audio: Sequence[np.ndarray], sample_rate: int
) -> tuple[list[float | None], list[float | None]]:
    """What the reward component returns for a batch: each clip's score in [0, 1] and its raw utility (None for
    both where the clip cannot be scored)."""
    if sample_rate != SAMPLE_RATE:
        from llasa.audio import resample

        audio = [
            None if wav is None else resample(np.asarray(wav, dtype=np.float32), sample_rate, SAMPLE_RATE)
            for wav in audio
        ]
    utilities = model.utilities(audio)
    return [None if u is None else model.score_of_utility(u) for u in utilities], utilities
