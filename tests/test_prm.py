"""PRM training on transformers' Trainer and scoring, on a tiny random Llama: steps with a marker are bad."""

from __future__ import annotations

import importlib.util
import math
import random
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from tests.tiny_model import build_tiny_model_dir
from verifier.prm import (
    IGNORE,
    PrmCollator,
    PrmConfig,
    ProcessRewardModel,
    TrainConfig,
    auc,
    step_loss,
    step_targets,
    token_example,
    train,
)

MARKER = "X"  # a step containing it is bad


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # backward passes: 40 s vs 1 s on 2 shared threads


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_prm"))


def marker_rows(n: int, seed: int) -> list[dict]:
    """Three steps per row; a bad step has the marker. Soft labels: good 0.75-1.0, bad 0.0-0.25."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        steps, labels = [], []
        for _ in range(3):
            bad = rng.random() < 0.4
            word = "".join(rng.choice("abcdefgh") for _ in range(6))
            steps.append(word[:3] + (MARKER if bad else "a") + word[3:])
            labels.append(not bad)
        soft = [rng.choice((0.75, 1.0)) if ok else rng.choice((0.0, 0.25)) for ok in labels]
        rows.append({"prompt": "Which steps are fine?", "completions": steps, "labels": labels,
                     "soft_labels": soft})
    return rows


def _model(path) -> ProcessRewardModel:
    return ProcessRewardModel.build(PrmConfig(backbone=str(path), max_length=128))


def _split_scores(model, rows):
    scores = model.score_batch([(r["prompt"], r["completions"]) for r in rows])
    pairs = [(s, ok) for r, ss in zip(rows, scores, strict=True) for s, ok in zip(ss, r["labels"], strict=True)]
    return [s for s, ok in pairs if ok], [s for s, ok in pairs if not ok]


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_fine_tune_lowers_loss_and_separates_held_out_steps(tiny_dir, tmp_path, kind):
    model = _model(tiny_dir)
    cfg = TrainConfig(label_kind=kind, train_mode="full", lr=3e-3, epochs=8)
    report = train(model, marker_rows(48, 0), cfg, tmp_path / "ck", eval_rows=marker_rows(16, 1))
    assert len(report.epoch_losses) == 8 and report.epoch_losses[-1] < 0.5 * report.epoch_losses[0]
    assert report.n_examples == 48 and report.n_steps == 48 * 3 and report.n_eval_examples == 16
    assert report.eval_metrics["eval_loss"] < report.eval_before["eval_loss"]
    assert report.eval_metrics["eval_auc"] > 0.8  # soft: a bad step valued 0.25 counts as good (value > 0)
    good, bad = _split_scores(model, marker_rows(16, 1))
    assert np.mean(good) > np.mean(bad) + 0.4
    loaded = ProcessRewardModel.load(model.save(tmp_path / "prm"))  # the fine-tuned body is saved with it
    assert _split_scores(loaded, marker_rows(16, 1)) == (pytest.approx(good, abs=1e-5), pytest.approx(bad, abs=1e-5))


def test_gradient_accumulation_matches_one_big_batch(tiny_dir, tmp_path):
    """Rows train different numbers of steps (some masked); the loss is averaged over steps, not micro-batches."""
    rng = random.Random(5)
    rows = [{**r, "labels": [ok if rng.random() < 0.6 else None for ok in r["labels"]]}
            for r in marker_rows(32, 4)]
    rows = [r for r in rows if any(ok is not None for ok in r["labels"])]
    heads = []
    for batch, accum in ((8, 1), (2, 4)):
        model = _model(tiny_dir)
        train(model, rows, TrainConfig(lr=1e-2, epochs=2, batch_size=batch, grad_accum=accum), tmp_path / "ck")
        heads.append(model.head.weight.detach().clone())
    assert torch.allclose(heads[0], heads[1], atol=1e-5)


def test_epoch_losses_do_not_depend_on_logging_steps(tiny_dir, tmp_path):
    """6 optimizer steps per epoch; logs every 1, 4 (crossing epoch ends) or 1000 steps give the same means."""
    runs = [train(_model(tiny_dir), marker_rows(48, 0), TrainConfig(lr=1e-2, epochs=3, logging_steps=every),
                  tmp_path / "ck").epoch_losses for every in (1, 4, 1000)]
    assert len(runs[0]) == 3 and runs[1] == pytest.approx(runs[0]) and runs[2] == pytest.approx(runs[0])


def test_resume_from_a_checkpoint_ends_where_an_uninterrupted_run_does(tiny_dir, tmp_path):
    """6 steps per epoch, a checkpoint at step 12: resuming trains only epoch 3, to the same head."""
    cfg, rows = TrainConfig(lr=1e-2, epochs=3, save_strategy="steps", save_steps=12), marker_rows(48, 0)
    whole = _model(tiny_dir)
    losses = train(whole, rows, cfg, tmp_path / "ck").epoch_losses
    for later in set((tmp_path / "ck").iterdir()) - {tmp_path / "ck" / "checkpoint-12"}:
        shutil.rmtree(later)  # as if the run had died after step 12
    resumed = _model(tiny_dir)
    report = train(resumed, rows, TrainConfig(**{**asdict(cfg), "resume": True}), tmp_path / "ck")
    assert report.epoch_losses == pytest.approx(losses[-1:])
    assert torch.allclose(whole.head.weight, resumed.head.weight, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_training(tiny_dir, tmp_path):
    losses = []
    for checkpointing in (False, True):
        model = _model(tiny_dir)
        cfg = TrainConfig(train_mode="full", lr=3e-3, epochs=2, gradient_checkpointing=checkpointing)
        losses.append(train(model, marker_rows(16, 0), cfg, tmp_path / "ck").epoch_losses)
        flag = "is_activation_checkpointing" if hasattr(type(model.body), "is_activation_checkpointing") \
            else "is_gradient_checkpointing"  # renamed in transformers 5
        assert getattr(model.body, flag) == checkpointing
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_head_mode_trains_only_the_head_and_survives_save_load(tiny_dir, tmp_path):
    model, rows = _model(tiny_dir), marker_rows(48, 0)
    body_before = [p.clone() for p in model.body.parameters()]
    head_before = model.head.weight.clone()
    report = train(model, rows, TrainConfig(lr=1e-2, epochs=10), tmp_path / "ck")
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert all((a == b).all() for a, b in zip(body_before, model.body.parameters(), strict=True))
    assert not torch.equal(head_before, model.head.weight)
    loaded = ProcessRewardModel.load(model.save(tmp_path / "prm"))
    items = [(r["prompt"], r["completions"]) for r in rows]
    assert sum(loaded.score_batch(items), []) == pytest.approx(sum(model.score_batch(items), []), abs=1e-5)


def test_soft_labels_train_towards_the_float_value(tiny_dir, tmp_path):
    rows = [{**r, "soft_labels": [0.25] * 3} for r in marker_rows(16, 2)]
    model = _model(tiny_dir)
    train(model, rows, TrainConfig(label_kind="soft", lr=5e-2, epochs=40, lr_scheduler="constant"), tmp_path)
    scores = [s for ss in model.score_batch([(r["prompt"], r["completions"]) for r in rows]) for s in ss]
    assert np.mean(scores) == pytest.approx(0.25, abs=0.05)  # not rounded to 0 or 1


def test_soft_targets_and_loss_keep_a_quarter():
    row = {"prompt": "Q", "completions": ["a", "b", "c"], "labels": [True, False, None],
           "soft_labels": [0.25, 0.0, None]}
    assert step_targets(row, "soft") == [0.25, 0.0, None]
    assert step_targets(row, "hard") == [1.0, 0.0, None]
    assert step_targets({**row, "soft_labels": None, "labels": [0.5, 0.0, None]}, "soft") == [0.5, 0.0, None]
    assert step_targets({**row, "labels": [0.5, 0.0, 1.0]}, "hard") == [1.0, 0.0, 1.0]  # hard = value > 0
    labels = PrmCollator(pad_id=0)([{"input_ids": [5, 6], "labels": [IGNORE, 0.25]}])["labels"]
    assert labels.tolist() == [[IGNORE, 0.25]]
    diff = torch.tensor([0.3], requires_grad=True)  # logit(good) - logit(bad)
    logits = torch.stack([torch.zeros(1), diff], -1)[None]  # (1 example, 1 step, 2)
    loss = step_loss(logits, torch.tensor([[0.25]]), "soft")
    p = torch.sigmoid(diff)
    assert loss.item() == pytest.approx(-(0.25 * p.log() + 0.75 * (1 - p).log()).item(), abs=1e-6)
    loss.backward()
    assert diff.grad.item() == pytest.approx(p.item() - 0.25, abs=1e-6)  # zero only at P(good) = 0.25


def test_masked_steps_are_context_without_loss(tiny_dir):
    model = _model(tiny_dir)
    row = {"prompt": "Q?", "completions": ["ab", "cd", "ef"], "labels": [True, None, False]}
    ex, enc = token_example(model, row, "hard"), model.encode("Q?", ["ab", "cd", "ef"])
    assert ex["input_ids"] == enc.ids  # the masked step stays in the input
    trained_at = {p: t for p, t in enumerate(ex["labels"]) if t != IGNORE}
    assert trained_at == {enc.positions[0]: 1.0, enc.positions[2]: 0.0}
    short = token_example(model, {**row, "completions": ["ab"], "labels": [False]}, "hard")
    batch = PrmCollator(model.pad_id)([ex, short])
    assert batch["attention_mask"][1].tolist() == [1] * len(short["input_ids"]) + [0] * (len(ex["input_ids"])
                                                                                        - len(short["input_ids"]))
    trained = batch["labels"] != IGNORE
    assert trained.sum() == 3  # two steps of the first row, one of the second; padding is ignored
    logits = torch.randn(*batch["labels"].shape, 2, requires_grad=True)
    loss = step_loss(logits, batch["labels"], "hard")
    loss.backward()
    assert (logits.grad[~trained] == 0).all()  # question, masked step, padding: no gradient
    expected = F.cross_entropy(logits[trained].detach(), batch["labels"][trained].long())
    assert loss.item() == pytest.approx(expected.item())


def test_row_with_every_step_masked_has_nothing_to_train(tiny_dir):
    model = _model(tiny_dir)
    assert token_example(model, {"prompt": "Q", "completions": ["a", "b"], "labels": [None, None]}, "hard") is None


def test_auc_by_ranks():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([False, True])) == pytest.approx(0.5)  # ties share ranks
    assert math.isnan(auc(np.array([0.5]), np.array([True])))


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
    assert enc.positions[-1] == len(enc.ids) - 1


@pytest.mark.skipif(importlib.util.find_spec("peft") is not None, reason="checks the message without peft")
def test_lora_without_peft_is_a_clear_error(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="peft"):
        train(_model(tiny_dir), marker_rows(2, 0), TrainConfig(train_mode="lora"), tmp_path)


def test_unknown_or_bad_config_is_an_error():
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="unknown"):
        PrmConfig.from_dict({"lr": 1e-3})
    with pytest.raises(ValueError, match="train_mode"):
        TrainConfig(train_mode="adapter")
    assert TrainConfig.from_dict({"lora_target_modules": ["q_proj"]}).lora_target_modules == ("q_proj",)
