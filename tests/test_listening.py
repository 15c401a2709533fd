"""Listening tests: pairing the project's outputs, the preference store, the web app's rules, results, machine
labels, export and the learned preference reward (on real espeak-ng speech)."""

import json
import sqlite3

import numpy as np
import pytest
from starlette.testclient import TestClient

import listen
from demo.listening_clips import KINDS, SENTENCES, judge_by_construction, make_kind_folders, speak
from llasa.audio import SAMPLE_RATE, load_audio, write_wav
from llasa.listening.clips import Clip, find_clips, identical_notes, pair_clips, parse_system
from llasa.listening.export import export_records, write_dataset, write_jsonl
from llasa.listening.labeling import label_pairs
from llasa.listening.preference import (
    FeatureConfig,
    PreferenceModel,
    TrainingOptions,
    comparisons_from_judgments,
    preference_scores,
    train_preference_model,
)
from llasa.listening.results import (
    agreement,
    bradley_terry,
    cohen_kappa,
    fleiss_kappa,
    markdown_report,
    outcomes,
    plot_results,
    summarize,
)
from llasa.listening.server import create_app
from llasa.listening.store import PreferenceStore


def _tone(seconds: float = 0.5) -> np.ndarray:
    return (0.1 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)).astype(np.float32)


def _folder(path, stems, seconds=0.5):
    path.mkdir(parents=True)
    for stem in stems:
        write_wav(path / f"{stem}.wav", _tone(seconds), SAMPLE_RATE)
    return path


@pytest.fixture
def two_systems(tmp_path):
    """Two inference.py-style folders: ids 0-2 in both, 3 only in the first (no texts: paired by id)."""
    return {
        "base": _folder(tmp_path / "base", ["0", "1", "2", "3"]),
        "grpo": _folder(tmp_path / "grpo", ["0", "1", "2"]),
    }


@pytest.fixture
def store(tmp_path, two_systems):
    store = PreferenceStore(tmp_path / "ratings.sqlite")
    store.register(pair_clips({name: find_clips(name, folder) for name, folder in two_systems.items()}))
    return store


class TestPairing:
    def test_inference_folders_pair_by_id(self, two_systems):
        # Without texts, clips pair by file stem; the id only one system has is left unpaired.
        pairing = pair_clips({name: find_clips(name, folder) for name, folder in two_systems.items()})
        assert pairing.by == "id"
        assert sorted((a.stem, a.system, b.system) for a, b in pairing.pairs) == [
            ("0", "base", "grpo"),
            ("1", "base", "grpo"),
            ("2", "base", "grpo"),
        ]
        assert [clip.stem for clip in pairing.unpaired] == ["3"]

    def test_identical_clips_are_named(self, tmp_path, two_systems, caplog):
        # The two folders hold the same tone under each id: registering them warns that every shared clip is an
        # identical file; once one clip differs the count says 2 of 3, and none once all differ.
        with caplog.at_level("WARNING"):
            listen.open_store(tmp_path / "identical.sqlite", list(two_systems.items()), "auto")
        assert "base and grpo made identical audio: all 3 clips they share are identical files" in caplog.text

        def notes():
            return identical_notes(pair_clips({n: find_clips(n, f) for n, f in two_systems.items()}).pairs)

        write_wav(two_systems["grpo"] / "1.wav", _tone(0.4), SAMPLE_RATE)
        assert notes() == ["2 of the 3 clips base and grpo share are identical files."]
        for stem in ("0", "2"):
            write_wav(two_systems["grpo"] / f"{stem}.wav", 0.5 * _tone(), SAMPLE_RATE)
        assert notes() == []

    def test_evaluate_layout_reads_texts_from_clips_jsonl(self, tmp_path):
        # evaluate.py's output: audio/<system>/<id>.wav with the texts in <output_dir>/clips.jsonl.
        for system in ("base", "grpo"):
            _folder(tmp_path / "eval" / "audio" / system, ["a", "b"])
        records = [
            {"system": s, "id": i, "text": f"Text {i}.", "audio": str(tmp_path / "eval" / "audio" / s / f"{i}.wav")}
            for s in ("base", "grpo")
            for i in ("a", "b")
        ]
        (tmp_path / "eval" / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        clips = find_clips("grpo", tmp_path / "eval" / "audio" / "grpo")
        assert [(clip.stem, clip.text) for clip in clips] == [("a", "Text a."), ("b", "Text b.")]
        assert pair_clips({"base": find_clips("base", tmp_path / "eval/audio/base"), "grpo": clips}).by == "text"

    def test_training_samples_pair_by_text_and_occurrence(self, tmp_path):
        # samples/step-N: a prompt repeated over its group is paired n-th with n-th; file stems do not matter.
        steps = {}
        for step, texts in (("step-100", ["Hi.", "Hi.", "Bye."]), ("step-200", ["Bye.", "hi. ", "Hi."])):
            folder = _folder(tmp_path / step, [f"sample-{k}" for k in range(3)])
            lines = [json.dumps({"text": t, "file": f"sample-{k}.wav"}) for k, t in enumerate(texts)]
            (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")
            steps[step] = find_clips(step, folder)
        pairing = pair_clips(steps)
        assert pairing.by == "text"
        assert sorted((a.stem, b.stem) for a, b in pairing.pairs) == [
            ("sample-0", "sample-1"),
            ("sample-1", "sample-2"),
            ("sample-2", "sample-0"),
        ]

    def test_best_of_n_json_gives_the_text(self, tmp_path):
        # inference.py's best-of-N writes <id>.json beside <id>.wav with the text.
        folder = _folder(tmp_path / "bon", ["x"])
        (folder / "x.json").write_text(json.dumps({"id": "x", "text": "Best of eight.", "candidates": []}))
        assert find_clips("bon", folder)[0].text == "Best of eight."

    def test_bad_system_names_and_folders_are_refused(self, tmp_path):
        # NAME=DIR is checked: the form, the name's characters, the folder's existence.
        with pytest.raises(ValueError, match="NAME=DIR"):
            parse_system("nodir")
        with pytest.raises(ValueError, match="must be letters"):
            parse_system(f"a/b={tmp_path}")
        with pytest.raises(ValueError, match="is not a folder"):
            parse_system(f"a={tmp_path / 'missing'}")


class TestStore:
    def test_registering_twice_adds_nothing_and_keeps_ids(self, store, two_systems):
        # Re-registering the same folders (serve after pairs, a restart) keeps clip ids and pairs as they were.
        before = store.pairs()
        again = store.register(pair_clips({n: find_clips(n, f) for n, f in two_systems.items()}))
        assert (again.new_clips, again.new_pairs, again.total_pairs) == (0, 0, 3)
        assert store.pairs() == before

    def test_a_file_that_is_not_a_store_is_refused(self, tmp_path):
        # --db pointing at another kind of file gets a clear error, and the file is left as it was.
        other = tmp_path / "notes.txt"
        other.write_text("not a database, but long enough to have a header " * 4)
        with pytest.raises(ValueError, match="is not a listening-test store"):
            PreferenceStore(other)
        assert other.read_text().startswith("not a database")

    def test_reading_commands_do_not_create_a_store(self, tmp_path):
        # results on a mistyped --db says so instead of creating an empty store.
        with pytest.raises(SystemExit, match="No store at"):
            listen.main(["results", "--db", str(tmp_path / "typo.sqlite"), "--output_dir", str(tmp_path / "out")])
        assert not (tmp_path / "typo.sqlite").exists()

    def test_file_is_in_wal_mode(self, store):
        # WAL lets raters write while others read.
        with sqlite3.connect(store.path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_a_rater_gets_each_pair_once_and_resumes(self, store):
        # next_pair never returns a judged pair; a new store object on the same file (a restart) resumes.
        seen = []
        for _ in range(2):
            shown = store.next_pair("alice")
            seen.append(shown.pair_id)
            assert store.record("alice", shown.pair_id, shown.a, shown.b, "a", ["noise"]) is True
        reopened = PreferenceStore(store.path)
        assert reopened.progress("alice") == (2, 3)
        last = reopened.next_pair("alice")
        assert last.pair_id not in seen
        reopened.record("alice", last.pair_id, last.a, last.b, "same")
        assert reopened.next_pair("alice") is None
        assert reopened.next_pair("bob") is not None  # others are independent

    def test_first_judgment_is_kept_when_resent(self, store):
        # A click sent twice (a retry after a lost reply) is one row: the first.
        shown = store.next_pair("alice")
        assert store.record("alice", shown.pair_id, shown.a, shown.b, "a") is True
        assert store.record("alice", shown.pair_id, shown.b, shown.a, "b") is False
        [row] = store.judgments()
        assert (row["choice"], row["shown_a"]) == ("a", shown.a)

    def test_inconsistent_judgments_are_refused(self, store):
        # Clips not of the pair, unknown choices and tags, unknown pairs and machine-like human names raise.
        shown = store.next_pair("alice")
        other = next(p for p in store.pairs() if p["pair_id"] != shown.pair_id)
        with pytest.raises(ValueError, match="are not pair"):
            store.record("alice", shown.pair_id, shown.a, other["clip_a"], "a")
        with pytest.raises(ValueError, match="choice must be"):
            store.record("alice", shown.pair_id, shown.a, shown.b, "left")
        with pytest.raises(ValueError, match="Unknown tag"):
            store.record("alice", shown.pair_id, shown.a, shown.b, "a", ["loudness"])
        with pytest.raises(ValueError, match="No pair"):
            store.record("alice", 999, shown.a, shown.b, "a")
        with pytest.raises(ValueError, match="no colon"):
            store.record("ai:me", shown.pair_id, shown.a, shown.b, "a")
        assert store.judgments() == []

    def test_winner_is_read_through_the_shown_order(self, store):
        # choice "b" with the pair's second clip shown first means the pair's first clip's system won.
        pair = store.pairs()[0]
        store.record("alice", pair["pair_id"], pair["clip_b"], pair["clip_a"], "b", ["prosody"])
        [row] = store.judgments()
        assert (row["winner"], row["loser"], row["shown_first"], row["tags"]) == ("base", "grpo", "grpo", ["prosody"])

    def test_only_registered_ids_map_to_files(self, store, two_systems):
        # clip_path is the only way from a request to a file: paths and unknown ids give None.
        pair = store.pairs()[0]
        assert store.clip_path(pair["clip_a"]) == two_systems["base"] / "0.wav"
        for request in ("../../etc/passwd", str(two_systems["base"] / "0.wav"), "A" * 16, "", None):
            assert store.clip_path(request) is None


class TestServer:
    def test_page_api_and_clips(self, store):
        # The page, the next pair and a judgment round trip; a clip comes back as WAV.
        client = TestClient(create_app(store))
        assert "Which sounds better?" in client.get("/").text
        shown = client.get("/api/next", params={"rater": "alice"}).json()
        assert (shown["done"], shown["total"]) == (0, 3)
        pair = shown["pair"]
        reply = client.post(
            "/api/judgments",
            json={"rater": "alice", "pair_id": pair["pair_id"], "a": pair["a"], "b": pair["b"], "choice": "b"},
        )
        assert reply.json() == {"saved": True, "new": True, "done": 1, "total": 3}
        audio = client.get(f"/clips/{pair['a']}")
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert audio.content[:4] == b"RIFF"

    def test_unregistered_paths_are_refused(self, store):
        # Nothing but a registered clip id reaches a file: unknown ids, traversal and absolute paths are 404.
        client = TestClient(create_app(store))
        for url in (
            "/clips/AAAAAAAAAAAAAAAA",
            "/clips/..%2F..%2Fetc%2Fpasswd",
            "/clips/../../etc/passwd",
            "/etc/passwd",
        ):
            assert client.get(url).status_code == 404, url

    def test_bad_requests_get_400(self, store):
        # A judgment that does not match its pair, or a bad rater name, is refused with the reason.
        client = TestClient(create_app(store))
        pair = client.get("/api/next", params={"rater": "alice"}).json()["pair"]
        bad = {"rater": "alice", "pair_id": pair["pair_id"], "a": pair["a"], "b": pair["a"], "choice": "a"}
        assert client.post("/api/judgments", json=bad).status_code == 400
        assert client.post("/api/judgments", content=b"not json").status_code == 400
        assert client.get("/api/next", params={"rater": "ai:x"}).status_code == 400

    def test_token_guards_every_route(self, store):
        # With --token, each route answers 403 without it, and works with it (query or header).
        client = TestClient(create_app(store, token="s3cret"))
        pair_id = store.pairs()[0]["clip_a"]
        for url in ("/", "/api/next?rater=alice", f"/clips/{pair_id}"):
            assert client.get(url).status_code == 403, url
        assert client.get(f"/clips/{pair_id}?token=s3cret").status_code == 200
        assert client.get("/api/next?rater=alice", headers={"X-Listen-Token": "s3cret"}).status_code == 200
        assert client.get("/?token=wrong").status_code == 403


# ---------------------------------------------------------------------------------------------------------------------
# Results


def _simulated_store(tmp_path, utilities: dict[str, float], n_items: int, raters: list[str], seed: int):
    """Every pair of systems on n_items texts, judged by each rater from P(i beats j) = sigmoid(u_i - u_j), with
    "same" for a tenth of the judgments."""
    clips = {s: [Clip(s, f"{i}", tmp_path / s / f"{i}.wav", f"text {i}") for i in range(n_items)] for s in utilities}
    store = PreferenceStore(tmp_path / "sim.sqlite")
    store.register(pair_clips(clips))
    rng = np.random.default_rng(seed)
    for rater in raters:
        for pair in store.pairs():
            p_first = 1 / (1 + np.exp(-(utilities[pair["system_a"]] - utilities[pair["system_b"]])))
            draw = rng.random()
            choice = "same" if draw < 0.1 else ("a" if rng.random() < p_first else "b")
            store.record(rater, pair["pair_id"], pair["clip_a"], pair["clip_b"], choice)
    return store


class TestResults:
    UTILITIES = {"bad": -1.0, "base": 0.0, "grpo": 0.6, "best": 1.5}

    def test_bradley_terry_recovers_a_known_ordering(self, tmp_path):
        # Three simulated raters (seeded) on 20 texts: the fitted order is the true one, and the intervals of
        # the best and the worst system lie apart, on either side of an average system (0.5).
        store = _simulated_store(tmp_path, self.UTILITIES, 20, ["r1", "r2", "r3"], seed=0)
        summary = summarize(store.judgments(), samples=300, seed=0)
        ranked = sorted(summary["systems"], key=lambda s: summary["systems"][s]["bt_utility"])
        assert ranked == ["bad", "base", "grpo", "best"]
        best, bad = summary["systems"]["best"], summary["systems"]["bad"]
        assert best["bt_win_prob_ci"][0] > 0.5 > bad["bt_win_prob_ci"][1]
        assert best["comparisons"] == 3 * 20 * 3  # 3 raters x 20 texts x 3 opponents
        assert best["wins"] + best["ties"] + best["losses"] == best["comparisons"]

    def test_bradley_terry_matches_the_closed_form_for_two_systems(self):
        # Two systems, x wins 3 of 4: the MLE is u_x - u_y = log(3); the prior pulls it towards 0 (log(3.25/1.25)).
        rows = outcomes([{"system_a": "x", "system_b": "y", "winner": w} for w in ("x", "x", "x", "y")], ["x", "y"])
        assert np.diff(bradley_terry(rows, 2, prior=0.0))[0] == pytest.approx(-np.log(3))
        assert np.diff(bradley_terry(rows, 2))[0] == pytest.approx(-np.log(3.25 / 1.25))

    def test_agreement_measures(self):
        # Identical raters agree fully (kappa 1); Cohen's kappa of a known table: p_o 0.5, p_e 0.5 -> 0; of
        # p_o 2/3, p_e (2*1 + 1*2) / 9 = 4/9 -> (2/3 - 4/9) / (5/9) = 0.4; none when both raters always say one label.
        assert fleiss_kappa([["first", "first"], ["second", "second"], ["same", "same"]]) == pytest.approx(1.0)
        assert cohen_kappa([("first", "first"), ("first", "second"), ("second", "first"), ("second", "second")]) == 0
        assert cohen_kappa([("first", "first"), ("first", "second"), ("second", "second")]) == pytest.approx(0.4)
        assert cohen_kappa([("same", "same"), ("same", "same")]) is None
        judgments = [
            {"pair_id": p, "rater": r, "winner_clip": w, "clip_a": "c1"}
            for p, r, w in ((1, "x", "c1"), (1, "y", "c1"), (2, "x", "c1"), (2, "y", None), (3, "x", "c1"))
        ]
        result = agreement(judgments)
        assert (result["shared_pairs"], result["pairwise_agreement"]) == (2, 0.5)
        assert result["rater_pairs"]["x / y"]["shared_pairs"] == 2

    def test_report_and_plot(self, tmp_path):
        # The markdown ranks systems best first; the PNG is written.
        store = _simulated_store(tmp_path, self.UTILITIES, 5, ["r1", "r2"], seed=1)
        summary = summarize(store.judgments(), samples=50)
        report = markdown_report(summary, "Listening test")
        rows = [line.split(" | ")[0].strip("| ") for line in report.splitlines() if line.startswith("| ")]
        assert rows[1:5] == sorted(self.UTILITIES, key=lambda s: -summary["systems"][s]["bt_utility"])
        assert "Fleiss' kappa" in report
        path = plot_results(summary, tmp_path / "results.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_results_command(self, tmp_path):
        # listen.py results writes results.md/json/png from the store's human judgments.
        store = _simulated_store(tmp_path, self.UTILITIES, 4, ["r1"], seed=2)
        listen.main(["results", "--db", str(store.path), "--output_dir", str(tmp_path / "out"), "--bootstrap", "20"])
        written = json.loads((tmp_path / "out" / "results.json").read_text())
        assert written["n_judgments"] == 4 * 6 and (tmp_path / "out" / "results.png").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# Machine labels and export


def _length_scorer(waveforms, texts):
    """Longer is better, except clips over 0.9 s, which cannot be scored."""
    return [None if len(wav) > 0.9 * SAMPLE_RATE else len(wav) / SAMPLE_RATE for wav in waveforms]


class TestLabelsAndExport:
    def test_label_pairs_and_export(self, tmp_path):
        # Machine judgments follow the scores (ties within the margin are "same"), are marked machine under
        # ai:<name>, skip unscorable pairs (counted), add nothing when rerun, and export to JSONL and a dataset.
        lengths = {"short": {"0": 0.4, "1": 0.5, "2": 1.0}, "long": {"0": 0.6, "1": 0.52, "2": 0.5}}
        clips = {}
        for system, stems in lengths.items():
            (tmp_path / system).mkdir()
            for stem, seconds in stems.items():
                write_wav(tmp_path / system / f"{stem}.wav", _tone(seconds), SAMPLE_RATE)
            clips[system] = find_clips(system, tmp_path / system)
        store = PreferenceStore(tmp_path / "db.sqlite")
        store.register(pair_clips(clips))
        load = lambda path: load_audio(path, SAMPLE_RATE)  # noqa: E731
        done = label_pairs(store, _length_scorer, "length", load, margin=0.05)
        assert (done.new, done.already, done.unscored) == (2, 0, 1)
        rows = {row["path_a"].rsplit("/", 1)[1]: row for row in store.judgments()}
        assert (rows["0.wav"]["winner"], rows["1.wav"]["winner"]) == ("long", None)
        assert {(row["rater"], row["kind"]) for row in rows.values()} == {("ai:length", "machine")}
        assert rows["0.wav"]["detail"]["score_b"] == pytest.approx(0.6)
        assert label_pairs(store, _length_scorer, "ai:length", load).new == 0

        records = export_records(store.judgments())
        path = write_jsonl(records, tmp_path / "out.jsonl")
        assert [json.loads(line)["winner"] for line in path.read_text().splitlines()] == ["long", None]
        import datasets

        write_dataset(records, tmp_path / "dataset")
        dataset = datasets.load_from_disk(str(tmp_path / "dataset"))
        assert dataset.num_rows == 2 and dataset[0]["rater"] == "ai:length" and dataset[0]["tags"] == []

    def test_export_never_replaces_a_file_or_folder(self, tmp_path):
        # listen.py export refuses an --output or --dataset_dir that already exists, naming it, before writing
        # anything: the file keeps its content and no dataset folder appears.
        PreferenceStore(tmp_path / "db.sqlite")
        existing = tmp_path / "notes.jsonl"
        existing.write_text("mine\n")
        argv = ["export", "--db", str(tmp_path / "db.sqlite"), "--output", str(existing)]
        with pytest.raises(SystemExit, match="notes.jsonl already exists"):
            listen.main([*argv, "--dataset_dir", str(tmp_path / "ds")])
        assert existing.read_text() == "mine\n" and not (tmp_path / "ds").exists()

    def test_ai_label_command_with_a_reward_config(self, tmp_path, two_systems):
        # listen.py ai-label loads a reward config (here the duration component alone: no model to load) and
        # stores its verdicts as machine judgments named after the config.
        for folder in two_systems.values():
            (folder / "metadata.csv").write_text(
                "file_name,text\n" + "".join(f"{i}.wav,Hello number {i}.\n" for i in range(4))
            )
        config = tmp_path / "duration_only.json"
        config.write_text(json.dumps({"components": {"duration": {"weight": 1.0, "chars_per_second": 14}}}))
        db = tmp_path / "ai.sqlite"
        listen.main(
            ["ai-label", "--pairs", *(f"{n}={f}" for n, f in two_systems.items()), "--db", str(db)]
            + ["--reward_config", str(config), "--margin", "0.001"]
        )
        judgments = PreferenceStore(db).judgments()
        assert len(judgments) == 3
        assert {(j["rater"], j["kind"], j["choice"]) for j in judgments} == {("ai:duration_only", "machine", "same")}


# ---------------------------------------------------------------------------------------------------------------------
# The learned preference reward


@pytest.fixture(scope="module")
def kind_folders(tmp_path_factory, espeak):
    """12 texts x 4 kinds of real espeak-ng speech (varied/flat intonation x clean/noisy)."""
    return make_kind_folders(tmp_path_factory.mktemp("kinds"), n_texts=12)


def _judged_by_construction(tmp_path, folders, seed=0) -> PreferenceStore:
    """Every pair of kinds on every text, judged as constructed (equal merits left out)."""
    store = PreferenceStore(tmp_path / "construction.sqlite")
    store.register(pair_clips({kind: find_clips(kind, folder) for kind, folder in folders.items()}))
    judge_by_construction(store, seed=seed)
    return store


@pytest.fixture(scope="module")
def acoustic_model_dir(tmp_path_factory, kind_folders):
    """A model trained by `listen.py train-reward` on acoustic measures alone, 3 of 12 texts held out."""
    folder = tmp_path_factory.mktemp("acoustic")
    store = _judged_by_construction(folder, kind_folders, seed=1)
    listen.main(
        ["train-reward", "--db", str(store.path), "--output_dir", str(folder / "m"), "--embedding", "none"]
        + ["--held_out", "0.25", "--seed", "1"]
    )
    return folder / "m"


@pytest.mark.slow
class TestPreferenceModel:
    def test_held_out_accuracy_and_round_trip(self, tmp_path, kind_folders):
        # Trained on 9 texts' judgments (clean over noisy, varied over flat intonation), the default model (resemblyzer
        # embedding + acoustic measures, linear Bradley-Terry head) orders >= 90 % of the 3 held-out texts' pairs;
        # saved and loaded back, it gives the same scores, and clean speech outscores its noisy copy.
        store = _judged_by_construction(tmp_path, kind_folders)
        comparisons = comparisons_from_judgments(store.judgments())
        assert len(comparisons) == 12 * 5
        model = train_preference_model(
            comparisons, lambda path: load_audio(path, SAMPLE_RATE), FeatureConfig(), TrainingOptions(held_out=0.25)
        )
        assert model.metrics["n_held_out_items"] == 3 and model.metrics["n_held_out_decided"] == 15
        assert model.metrics["held_out_accuracy"] >= 0.9

        model.save(tmp_path / "prefs_model")
        assert (
            json.loads((tmp_path / "prefs_model" / "config.json").read_text())["features"]["embedding"]
            == "resemblyzer"
        )
        loaded = PreferenceModel.load(tmp_path / "prefs_model")
        clips = [load_audio(kind_folders[kind] / "s11.wav", SAMPLE_RATE) for kind in KINDS]
        assert loaded.scores(clips) == pytest.approx(model.scores(clips), abs=1e-6)
        scores = dict(zip(KINDS, loaded.scores(clips), strict=True))
        assert scores["varied_clean"] > scores["varied_noisy"] and scores["varied_clean"] > scores["flat_clean"]
        assert all(0 < score < 1 for score in scores.values())

    def test_train_reward_command_and_component_scoring(self, acoustic_model_dir, kind_folders):
        # listen.py train-reward (acoustic measures only) writes a folder PreferenceModel.load reads; what the
        # "preference" reward component returns from it: scores in [0, 1] with their utilities, the same at 24 kHz
        # as at 16 kHz (resampled), and None for a clip too short or silent to measure.
        model = PreferenceModel.load(acoustic_model_dir)
        assert model.metrics["held_out_accuracy"] >= 0.9
        clean, noisy = (
            load_audio(kind_folders[kind] / "s00.wav", SAMPLE_RATE) for kind in ("varied_clean", "varied_noisy")
        )
        scores, utilities = preference_scores(
            model, [clean, noisy, clean[: SAMPLE_RATE // 10], np.zeros(SAMPLE_RATE)], SAMPLE_RATE
        )
        assert scores[0] > scores[1] and scores[2:] == [None, None] and utilities[2:] == [None, None]
        assert scores[0] == pytest.approx(1 / (1 + np.exp(-(utilities[0] - model.reference_utility))))
        from llasa.audio import resample

        at_24k, _ = preference_scores(model, [resample(clean, SAMPLE_RATE, 24000)], 24000)
        assert at_24k[0] == pytest.approx(scores[0], abs=0.05)

    def test_preference_component_in_the_reward(self, tmp_path, acoustic_model_dir, kind_folders):
        # The "preference" component as a reward config names it: load_reward builds it from {"weight", "model"},
        # a clip's reward is then the model's score, and a config without a usable model folder is refused at once.
        from llasa.rewards import load_reward

        model = PreferenceModel.load(acoustic_model_dir)
        reward = load_reward({"components": {"preference": {"weight": 1.0, "model": str(acoustic_model_dir)}}})
        clean = load_audio(kind_folders["varied_clean"] / "s01.wav", SAMPLE_RATE)
        [clip] = reward.score_audio([clean], ["A rainbow appeared after the summer rain."])
        assert clip.reward == pytest.approx(model.scores([clean])[0], abs=1e-6)
        assert clip.metrics["preference_utility"] == pytest.approx(model.utilities([clean])[0], abs=1e-6)
        with pytest.raises(ValueError, match="preference component's model"):
            load_reward({"components": {"preference": {"weight": 1.0, "model": str(tmp_path / "missing")}}})

    def test_missing_model_folder_is_explained(self, tmp_path):
        # Loading a folder without a model names the command that makes one.
        with pytest.raises(FileNotFoundError, match="listen.py train-reward"):
            PreferenceModel.load(tmp_path)


def test_espeak_intonation_settings_differ(tmp_path, espeak):
    # The construction the preference tests rely on: SSML range "0" is flatter than "x-high" (F0 range, semitones).
    from llasa.listening.preference import voiced_semitones

    ranges = []
    for pitch_range in ("0", "x-high"):
        semitones, _ = voiced_semitones(speak(SENTENCES[0], pitch_range=pitch_range))
        ranges.append(np.percentile(semitones, 90) - np.percentile(semitones, 10))
    assert ranges[0] < 1.0 < 3.0 < ranges[1]
