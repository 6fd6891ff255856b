"""PRM training and scoring on a tiny random Llama: steps with a marker character are bad."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tests.tiny_model import build_tiny_model_dir
from verifier.prm import PrmConfig, ProcessRewardModel, mean_loss, step_targets, train

MARKER = "X"  # a step containing it is bad


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Backward passes on a tiny model spin-wait badly when cores are shared (40 s vs 1 s on 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_prm"))


def marker_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        steps, labels = [], []
        for _ in range(3):
            bad = rng.random() < 0.4
            word = "".join(rng.choice("abcdefgh") for _ in range(6))
            steps.append(word[:3] + (MARKER if bad else "a") + word[3:])
            labels.append(not bad)
        rows.append({"prompt": "Which steps are fine?", "completions": steps, "labels": labels})
    return rows


def _model(path, **options) -> ProcessRewardModel:
    return ProcessRewardModel.build(PrmConfig(backbone=str(path), batch_size=8, max_length=128, **options))


def _split_scores(model, rows):
    scores = model.score_batch([(r["prompt"], r["completions"]) for r in rows])
    good = [s for r, ss in zip(rows, scores, strict=True) for s, ok in zip(ss, r["labels"], strict=True) if ok]
    bad = [s for r, ss in zip(rows, scores, strict=True) for s, ok in zip(ss, r["labels"], strict=True) if not ok]
    return good, bad


def test_head_only_training_reduces_loss(tiny_dir):
    model, rows = _model(tiny_dir, lr=1e-2, epochs=20), marker_rows(48, 0)
    body_before = [p.clone() for p in model.body.parameters()]
    before = mean_loss(model, rows)
    report = train(model, rows)
    assert mean_loss(model, rows) < 0.7 * before
    assert report.epoch_losses[-1] < report.epoch_losses[0] and report.n_steps == 48 * 3
    assert all((a == b).all() for a, b in zip(body_before, model.body.parameters(), strict=True))  # frozen


def test_fine_tuned_scorer_separates_held_out_steps_and_survives_save_load(tiny_dir, tmp_path):
    model = _model(tiny_dir, freeze_body=False, lr=3e-3, epochs=8)
    train(model, marker_rows(48, 0))
    held_out = marker_rows(16, 1)
    good, bad = _split_scores(model, held_out)
    assert min(good) > 0.5 > max(bad)
    loaded = ProcessRewardModel.load(model.save(tmp_path / "prm"))
    good2, bad2 = _split_scores(loaded, held_out)
    assert good2 + bad2 == pytest.approx(good + bad, abs=1e-5)


def test_soft_labels_train_towards_the_float_value(tiny_dir):
    rows = [{**r, "soft_labels": [0.25] * 3} for r in marker_rows(16, 2)]
    model = _model(tiny_dir, label_kind="soft", lr=5e-2, epochs=40)
    train(model, rows)
    scores = [s for ss in model.score_batch([(r["prompt"], r["completions"]) for r in rows]) for s in ss]
    assert sum(scores) / len(scores) == pytest.approx(0.25, abs=0.05)  # not rounded to 0 or 1


def test_step_targets_hard_and_soft():
    row = {"labels": [True, False], "soft_labels": [0.75, 0.0]}
    assert step_targets(row, "hard") == [1.0, 0.0]
    assert step_targets(row, "soft") == [0.75, 0.0]
    assert step_targets({"labels": [0.5, 0.0]}, "hard") == [1.0, 0.0]  # MC values: hard = value > 0


def test_steps_beyond_max_length_score_nan(tiny_dir):
    model = _model(tiny_dir)
    enc = model.encode("Q?", ["a" * 60, "b" * 60, "c" * 60])
    assert len(enc.ids) <= 128 and len(enc.positions) == 2
    scores = model.score("Q?", ["a" * 60, "b" * 60, "c" * 60])
    assert not math.isnan(scores[1]) and math.isnan(scores[2])


def test_step_positions_are_separator_tokens(tiny_dir):
    model = _model(tiny_dir)
    enc = model.encode("Q?", ["ab", "cd\n\n"])  # a trailing separator is not doubled
    text = model.tokenizer.decode(enc.ids)
    assert text == "Q?\n\nab\n\ncd\n\n"
    assert [model.tokenizer.decode([enc.ids[p]]) for p in enc.positions] == ["\n", "\n"]


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="unknown"):
        PrmConfig.from_dict({"learning_rate": 1e-3})
