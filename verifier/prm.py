"""Process reward model trained on transformers' ``Trainer``: a 2-way head read at the end of every step.

The input is ``question + sep + step_1 + sep + ... + step_n + sep``, each piece tokenized on its own and the
ids concatenated (as the engines do with prefixes), so step boundaries are exact token positions. Training
is token classification: every token's label is ``IGNORE`` except each step's last token (the separator's
last token), which carries the step's target. Two logits (bad, good): hard labels train with 2-class
cross-entropy; soft labels (MC values in [0, 1]) with BCE on ``good - bad`` against the float value, so 0.25
stays 0.25 (TRL <= 1.13 cast it with ``int``). A step whose label is None is kept as context, never trained
on. The score of a step is P(good) = softmax(logits)[GOOD] either way.

``train_mode``: ``head`` (CPU demo) freezes the body, so its features at the step positions are computed
once and the Trainer fits the head on them (epochs cost nothing); ``full`` fine-tunes everything; ``lora``
adds PEFT adapters to the body (optional ``peft`` package) and merges them into the body when saving.
Checkpoints, logging, eval, gradient accumulation, bf16 and multi-GPU (``torchrun``) are the Trainer's.

Example::

    >>> model = ProcessRewardModel.build(PrmConfig(backbone="smollm2-135m-instruct"))  # doctest: +SKIP
    >>> rows = [{"prompt": "2+2?", "completions": ["2+2=4", "So 4."], "labels": [True, None]}]
    >>> report = train(model, rows, TrainConfig(epochs=2), Path("out/checkpoints"))  # doctest: +SKIP
    >>> model.score("2+2?", ["2+2=5", "So 5."])  # doctest: +SKIP
    [0.12, 0.08]
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from transformers import AutoModel, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from cluster.models import resolve_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LABEL_KINDS = ("hard", "soft")
TRAIN_MODES = ("head", "full", "lora")
CONFIG_FILE, HEAD_FILE, BODY_DIR = "prm_config.json", "head.pt", "backbone"
BAD, GOOD = 0, 1  # logit indices
IGNORE = -100  # label of every token that is not a trained step end (the Trainer counts the others)
EVAL_KEYS = ("eval_loss", "eval_auc", "eval_accuracy")  # held-out step metrics kept in the report


def _from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class PrmConfig:
    """The model: saved with it, so a PRM folder scores the way it was trained."""

    backbone: str = "smollm2-135m-instruct"  # registry name or HF folder (cluster.models.resolve_model)
    max_length: int = 1024  # tokens; the question is cut from the left first, then trailing steps dropped
    step_separator: str = "\n\n"  # appended to the question and to every step; its last token is read
    dtype: str = "float32"  # body weights as loaded: float32 on CPU (and for bf16 mixed precision)
    device: str = "cpu"  # cpu | cuda | auto; under torchrun, cuda means this process's LOCAL_RANK GPU
    score_batch_size: int = 8  # solutions per forward pass when scoring

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
        if self.max_length < 8 or self.score_batch_size < 1:
            raise ValueError("need max_length >= 8 and score_batch_size >= 1")
        if not self.step_separator:
            raise ValueError("step_separator must be non-empty")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrmConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the loss, what trains, and the ``TrainingArguments`` worth setting from a recipe."""

    label_kind: str = "hard"  # hard: cross-entropy on bool labels; soft: BCE on the MC value
    train_mode: str = "head"  # head (body frozen, features cached) | full | lora
    lr: float = 1e-3  # peak learning rate: ~1e-3 head only, ~1e-4 LoRA, ~1e-5 full fine-tune
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    epochs: float = 3.0  # passes over the training rows (ignored when max_steps > 0)
    max_steps: int = -1  # optimizer steps; -1 = run `epochs`
    batch_size: int = 8  # solutions per device per micro-batch (training and eval)
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_steps: float = 0.0  # optimizer steps of LR warmup, or a fraction of all steps when < 1
    lr_scheduler: str = "linear"  # transformers scheduler name: linear | cosine | constant | ...
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    bf16: bool = False  # bf16 autocast (mixed precision); keep dtype = float32 for fp32 master weights
    gradient_checkpointing: bool = False  # recompute body activations in backward: less memory, ~30% slower
    logging_steps: int = 10  # optimizer steps between loss logs
    eval_fraction: float = 0.0  # held-out share of problems when the data has no `split` column
    eval_strategy: str = "epoch"  # epoch | steps | no: when to evaluate on the held-out rows
    eval_steps: int = 100  # optimizer steps between evals when eval_strategy = steps
    save_strategy: str = "no"  # no | epoch | steps: Trainer checkpoints under OUT/checkpoints
    save_steps: int = 500  # optimizer steps between checkpoints when save_strategy = steps
    save_total_limit: int = 2  # checkpoints kept
    resume: bool = False  # continue from the newest checkpoint under OUT/checkpoints
    report_to: str = "none"  # none | tensorboard | wandb | ... (Trainer integrations)
    lora_r: int = 16  # LoRA rank (train_mode = lora)
    lora_alpha: int = 32  # LoRA scale numerator: the update is scaled by alpha / r
    lora_dropout: float = 0.05  # dropout on the LoRA input
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # body Linear names
    seed: int = 0  # head init, shuffling, eval split

    def __post_init__(self) -> None:
        if self.label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {LABEL_KINDS}")
        if self.train_mode not in TRAIN_MODES:
            raise ValueError(f"train_mode must be one of {TRAIN_MODES}")
        if self.lr <= 0 or self.epochs <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("need lr > 0, epochs > 0, batch_size >= 1, grad_accum >= 1")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    positions: list[int]  # token index of each kept step's last token
    n_steps: int  # steps given (those beyond max_length have no position and score nan)


@dataclass
class TrainReport:
    epoch_losses: list[float]  # mean training loss per epoch
    n_examples: int  # training solutions with at least one trained step
    n_steps: int  # trained (labeled, not masked, not cut) steps per epoch
    seconds: float
    n_eval_examples: int = 0
    eval_before: dict[str, float] = field(default_factory=dict)  # EVAL_KEYS of the untrained model
    eval_metrics: dict[str, float] = field(default_factory=dict)  # EVAL_KEYS after training


class ProcessRewardModel(nn.Module):
    def __init__(self, body: nn.Module, tokenizer: Any, cfg: PrmConfig, body_path: str, seed: int = 0):
        super().__init__()
        self.body, self.tokenizer, self.cfg, self.body_path = body, tokenizer, cfg, body_path
        self.body_trained = False  # set by train(); a trained body is saved with the head
        with torch.random.fork_rng(devices=[]):  # a seeded head init that leaves the global RNG alone
            torch.manual_seed(seed)
            self.head = nn.Linear(body.config.hidden_size, 2).to(self.device)

    @classmethod
    def build(cls, cfg: PrmConfig, seed: int = 0) -> ProcessRewardModel:
        path = str(resolve_model(cfg.backbone))
        body = AutoModel.from_pretrained(path, dtype=DTYPES[cfg.dtype]).to(_device(cfg.device))
        return cls(body, AutoTokenizer.from_pretrained(path), cfg, path, seed)

    @property
    def device(self) -> torch.device:
        return next(self.body.parameters()).device

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits (batch, tokens, 2) from the body, or (batch, steps, 2) from cached body ``features``."""
        if features is None:
            features = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return {"logits": self.head(features.to(self.head.weight.dtype))}

    # ------------------------------------------------------------ encoding and scoring

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        sep, limit = self.cfg.step_separator, self.cfg.max_length
        step_ids = [self._ids(s.rstrip() + sep) for s in steps]
        q_ids = self._ids(question.strip() + sep)
        q_ids = q_ids[max(0, len(q_ids) + sum(map(len, step_ids)) - limit):]  # keep the question's end
        ids, positions = list(q_ids), []
        for s in step_ids:
            if len(ids) + len(s) > limit:
                break
            ids += s
            positions.append(len(ids) - 1)
        return Encoded(ids, positions, len(steps))

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def hidden(self, batch: list[Encoded]) -> torch.Tensor:
        """Last-layer hidden states (batch, width, hidden) of right-padded examples."""
        ids, mask = _pad([e.ids for e in batch], self.pad_id), _pad([[1] * len(e.ids) for e in batch], 0)
        return self.body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state

    @torch.no_grad()
    def step_features(self, enc: Sequence[Encoded]) -> list[torch.Tensor]:
        """Hidden states (positions, hidden) at each example's positions; batched by length, so little compute
        goes to padding."""
        self.eval()
        out: list[torch.Tensor] = [torch.empty(0)] * len(enc)
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
        for idx in _chunks(order, self.cfg.score_batch_size):
            hidden = self.hidden([enc[i] for i in idx])
            for row, i in enumerate(idx):
                out[i] = hidden[row, enc[i].positions]
        return out

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """P(good) per step for each (question, steps); nan for steps cut by ``max_length``."""
        enc = [self.encode(q, s) for q, s in items]
        with torch.no_grad():
            probs = [self(features=f)["logits"].float().softmax(-1)[:, GOOD].tolist()
                     for f in self.step_features(enc)]
        return [p + [math.nan] * (e.n_steps - len(p)) for p, e in zip(probs, enc, strict=True)]

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return self.score_batch([(question, steps)])[0]

    # ------------------------------------------------------------ save / load

    def save(self, out_dir: str | Path) -> Path:
        """Head weights + config JSON; the body path is recorded, or the body saved when it was trained.

        A frozen body is referenced by its local path (not copied), so such a PRM folder is portable only
        together with that body folder. LoRA adapters are merged into the body first, so loading needs no
        ``peft``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        body_path = self.body_path
        if self.body_trained:
            if hasattr(self.body, "merge_and_unload"):
                self.body = self.body.merge_and_unload()
            self.body.save_pretrained(out / BODY_DIR)
            self.tokenizer.save_pretrained(out / BODY_DIR)
            body_path = BODY_DIR
        torch.save(self.head.state_dict(), out / HEAD_FILE)
        meta = {"config": asdict(self.cfg), "body_path": body_path}
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> ProcessRewardModel:
        src = Path(model_dir)
        meta = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
        cfg = PrmConfig.from_dict({**meta["config"], **({"device": device} if device else {})})
        body_path = meta["body_path"] if meta["body_path"] != BODY_DIR else str(src / BODY_DIR)
        body = AutoModel.from_pretrained(body_path, dtype=DTYPES[cfg.dtype]).to(_device(cfg.device))
        model = cls(body, AutoTokenizer.from_pretrained(body_path), cfg, body_path)
        model.head.load_state_dict(torch.load(src / HEAD_FILE, map_location=model.device))
        return model


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _pad(rows: Sequence[Sequence[float]], value: float, dtype: torch.dtype = torch.long) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=dtype)


# ---------------------------------------------------------------- targets, collator, loss, metrics


def step_targets(row: Mapping[str, Any], kind: str) -> list[float | None]:
    """Per-step targets of a stepwise row; None = a masked step (context only, not trained on).

    hard: ``labels`` (bool, or an MC value: hard = value > 0). soft: ``soft_labels`` where the row has them
    (the export and the ``prm_dataset`` table), else ``float(labels)``; values must lie in [0, 1].
    """
    soft = kind == "soft" and row.get("soft_labels") is not None
    values = row["soft_labels"] if soft else row["labels"]
    if len(values) != len(row["completions"]):
        raise ValueError(f"{len(values)} labels for {len(row['completions'])} steps in {row.get('example_id')}")
    out = [None if v is None else float(v) if kind == "soft" else float(float(v) > 0) for v in values]
    if any(t is not None and not 0.0 <= t <= 1.0 for t in out):
        raise ValueError(f"soft labels must lie in [0, 1]: {values}")
    return out


def token_example(model: ProcessRewardModel, row: Mapping[str, Any], kind: str) -> dict[str, list] | None:
    """``input_ids`` and per-token ``labels`` (IGNORE except at trained step ends); None if nothing trains."""
    enc = model.encode(row["prompt"], row["completions"])
    labels: list[float] = [IGNORE] * len(enc.ids)
    for pos, target in zip(enc.positions, step_targets(row, kind), strict=False):  # steps cut: no position
        if target is not None:
            labels[pos] = target
    return {"input_ids": enc.ids, "labels": labels} if any(t != IGNORE for t in labels) else None


@dataclass(frozen=True)
class PrmCollator:
    """Right-pads a batch: token examples to (batch, tokens), cached-feature examples to (batch, steps)."""

    pad_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = _pad([it["labels"] for it in items], IGNORE, torch.float32)
        if "features" in items[0]:
            width, hidden = labels.shape[1], items[0]["features"].shape[-1]
            feats = torch.zeros(len(items), width, hidden, dtype=items[0]["features"].dtype)
            for i, it in enumerate(items):
                feats[i, :len(it["features"])] = it["features"]
            return {"features": feats, "labels": labels}
        ids = _pad([it["input_ids"] for it in items], self.pad_id)
        mask = _pad([[1] * len(it["input_ids"]) for it in items], 0)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def step_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str,
              num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Summed loss over labeled positions / their count (the Trainer's count across gradient accumulation)."""
    keep = labels != IGNORE
    picked, targets = logits[keep].float(), labels[keep].float()
    if kind == "hard":
        total = F.cross_entropy(picked, targets.long(), reduction="sum")
    else:
        total = F.binary_cross_entropy_with_logits(picked[:, GOOD] - picked[:, BAD], targets, reduction="sum")
    return total / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))


@dataclass(frozen=True)
class StepLoss:
    """``compute_loss_func`` for the Trainer: ``step_loss`` on the model's logits."""

    kind: str

    def __call__(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor,
                 num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        return step_loss(outputs["logits"], labels, self.kind, num_items_in_batch)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by ranks (Mann-Whitney U, ties share ranks); nan unless both classes are present."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average the ranks of tied scores
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def step_metrics(pred: Any) -> dict[str, float]:
    """Step-level AUC and accuracy of P(good) against hard targets (target > 0, as for hard labels)."""
    logits, labels = np.asarray(pred.predictions, dtype=np.float64), np.asarray(pred.label_ids)
    keep = labels != IGNORE
    good = 1.0 / (1.0 + np.exp(logits[..., BAD] - logits[..., GOOD]))[keep]
    positive = labels[keep] > 0
    return {"auc": auc(good, positive), "accuracy": float(((good > 0.5) == positive).mean())}


# ---------------------------------------------------------------- training


class EpochLosses(TrainerCallback):
    """Mean training loss per epoch: forces a log at each epoch end and weights logs by their steps."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self._sum, self._steps, self._last_step, self._closing = 0.0, 0, 0, False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            steps = state.global_step - self._last_step  # the logged loss is the mean over these steps
            self._sum += logs["loss"] * steps
            self._steps += steps
            self._last_step = state.global_step
            if self._closing:
                self._close()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self._last_step:
            self._close()
        else:
            self._closing, control.should_log = True, True

    def _close(self) -> None:
        self.losses.append(self._sum / self._steps if self._steps else math.nan)
        self._sum, self._steps, self._closing = 0.0, 0, False


def prepare(model: ProcessRewardModel, cfg: TrainConfig) -> None:
    """Choose what trains: the head alone, everything, or LoRA adapters on the body (plus the head)."""
    model.body.requires_grad_(cfg.train_mode == "full")
    if cfg.gradient_checkpointing:  # set here, not in TrainingArguments: transformers 5 renamed it
        enable = getattr(model.body, "activation_checkpointing_enable", None)
        (enable or model.body.gradient_checkpointing_enable)()
    if cfg.train_mode == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise ValueError("train_mode = lora needs the `peft` package (pip install peft)") from err
        model.body = get_peft_model(model.body, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                           lora_dropout=cfg.lora_dropout,
                                                           target_modules=list(cfg.lora_target_modules)))
        if cfg.gradient_checkpointing:
            model.body.enable_input_require_grads()  # checkpointed frozen embeddings would cut the graph
    model.body_trained = cfg.train_mode != "head"


def feature_examples(model: ProcessRewardModel, examples: list[dict[str, list]]) -> list[dict[str, Any]]:
    """Body features at each example's trained positions, computed once (``head`` mode: the body is frozen)."""
    where = [[p for p, t in enumerate(ex["labels"]) if t != IGNORE] for ex in examples]
    feats = model.step_features([Encoded(ex["input_ids"], w, 0) for ex, w in zip(examples, where, strict=True)])
    return [{"features": f.float().cpu(), "labels": [ex["labels"][p] for p in w]}
            for f, ex, w in zip(feats, examples, where, strict=True)]


def training_arguments(cfg: TrainConfig, output_dir: Path, use_cpu: bool, has_eval: bool) -> TrainingArguments:
    """The recipe's keys as ``TrainingArguments``; the rest keep the Trainer's defaults."""
    return TrainingArguments(
        output_dir=str(output_dir), learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_steps, lr_scheduler_type=cfg.lr_scheduler, max_grad_norm=cfg.grad_clip,
        bf16=cfg.bf16, logging_steps=cfg.logging_steps,
        eval_strategy=cfg.eval_strategy if has_eval else "no", eval_steps=cfg.eval_steps,
        save_strategy=cfg.save_strategy, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to, seed=cfg.seed, use_cpu=use_cpu, label_names=["labels"],
        remove_unused_columns=False, disable_tqdm=bool(os.environ.get("TRACEMILL_NO_PROGRESS")),
    )


def train(model: ProcessRewardModel, rows: Sequence[Mapping[str, Any]], cfg: TrainConfig, output_dir: Path,
          eval_rows: Sequence[Mapping[str, Any]] = ()) -> TrainReport:
    """Fit ``model`` on stepwise rows ``{prompt, completions, labels[, soft_labels]}`` with the Trainer."""
    start = time.perf_counter()
    prepare(model, cfg)
    train_set, eval_set = ([ex for r in part if (ex := token_example(model, r, cfg.label_kind)) is not None]
                           for part in (rows, eval_rows))
    if not train_set:
        raise ValueError("no trainable step: every label is masked, cut by max_length, or missing")
    if cfg.train_mode == "head":
        train_set, eval_set = feature_examples(model, train_set), feature_examples(model, eval_set)
    epochs = EpochLosses()
    trainer = Trainer(
        model=model, args=training_arguments(cfg, output_dir, model.device.type == "cpu", bool(eval_set)),
        train_dataset=train_set, eval_dataset=eval_set or None, data_collator=PrmCollator(model.pad_id),
        compute_loss_func=StepLoss(cfg.label_kind), compute_metrics=step_metrics, callbacks=[epochs],
    )
    resume = cfg.resume and output_dir.is_dir() and any(output_dir.glob("checkpoint-*"))
    before = _eval(trainer) if eval_set and not resume else {}
    trainer.train(resume_from_checkpoint=resume or None)
    after = _eval(trainer) if eval_set else {}
    model.eval()
    n_steps = sum(sum(t != IGNORE for t in ex["labels"]) for ex in train_set)
    return TrainReport(epochs.losses, len(train_set), n_steps, time.perf_counter() - start, len(eval_set),
                       before, after)


def _eval(trainer: Trainer) -> dict[str, float]:
    metrics = trainer.evaluate()
    return {k: float(metrics[k]) for k in EVAL_KEYS if k in metrics}
