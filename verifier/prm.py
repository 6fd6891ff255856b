"""Process reward model: a causal-LM body with a 2-way score head read at the end of every step.

The input is ``question + sep + step_1 + sep + ... + step_n + sep``, each piece tokenized on its own and the
ids concatenated (as the engines do with prefixes), so step boundaries are exact token positions; the head
reads the hidden state at each step's last token (the separator). Two logits (bad, good): hard labels train
with 2-class cross-entropy; soft labels (MC values) with BCE on ``good - bad`` against the float value, so a
value of 0.25 stays 0.25. The score of a step is P(good) = softmax(logits)[1] either way.

With ``freeze_body`` (the CPU demo) the body never changes, so its features are computed once per example
and the head trains on the cached features: epochs cost nothing. A full fine-tune (GPU config) runs the body
in every step.

Example::

    >>> cfg = PrmConfig(backbone="smollm2-135m-instruct", epochs=2)  # doctest: +SKIP
    >>> prm = ProcessRewardModel.build(cfg)  # doctest: +SKIP
    >>> rows = [{"prompt": "2+2?", "completions": ["2+2=4", "So 4."], "labels": [True, True]}]
    >>> report = train(prm, rows)  # doctest: +SKIP
    >>> prm.score("2+2?", ["2+2=5", "So 5."])  # doctest: +SKIP
    [0.12, 0.08]
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from transformers import AutoModel, AutoTokenizer

from cluster.models import resolve_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LABEL_KINDS = ("hard", "soft")
CONFIG_FILE, HEAD_FILE, BODY_DIR = "prm_config.json", "head.pt", "backbone"
GOOD = 1  # index of the "good step" logit


@dataclass(frozen=True)
class PrmConfig:
    backbone: str = "smollm2-135m-instruct"  # registry name or HF folder (cluster.models.resolve_model)
    label_kind: str = "hard"  # hard: cross-entropy on bool labels; soft: BCE on the MC value
    freeze_body: bool = True  # train the head only (CPU demo); False = full fine-tune
    lr: float = 1e-3  # AdamW; ~1e-3 for a head alone, ~1e-5 for a full fine-tune
    weight_decay: float = 0.0
    epochs: int = 3
    batch_size: int = 8  # examples (solutions) per optimizer step
    max_length: int = 1024  # tokens; the question is cut from the left first, then trailing steps dropped
    step_separator: str = "\n\n"  # appended to the question and to every step; its last token is read
    dtype: str = "float32"  # body dtype: float32 on CPU, bfloat16 on GPU
    device: str = "cpu"  # cpu | cuda | auto
    grad_clip: float = 1.0  # max grad norm; 0 = off
    seed: int = 0  # head init and shuffling

    def __post_init__(self) -> None:
        if self.label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {LABEL_KINDS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.max_length < 8:
            raise ValueError("need lr > 0, epochs >= 1, batch_size >= 1, max_length >= 8")
        if not self.step_separator:
            raise ValueError("step_separator must be non-empty")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrmConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"PrmConfig: unknown key(s) {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    positions: list[int]  # token index of each kept step's last token
    n_steps: int  # steps given (those beyond max_length have no position and score nan)


@dataclass
class TrainReport:
    epoch_losses: list[float]  # mean loss per epoch
    n_examples: int
    n_steps: int  # labeled steps seen per epoch
    seconds: float


class ProcessRewardModel(nn.Module):
    def __init__(self, body: nn.Module, tokenizer: Any, cfg: PrmConfig, body_path: str):
        super().__init__()
        self.body, self.tokenizer, self.cfg, self.body_path = body, tokenizer, cfg, body_path
        with torch.random.fork_rng(devices=[]):  # a seeded head init that leaves the global RNG alone
            torch.manual_seed(cfg.seed)
            self.head = nn.Linear(body.config.hidden_size, 2).to(self.device)
        self.body.requires_grad_(not cfg.freeze_body)

    @classmethod
    def build(cls, cfg: PrmConfig) -> ProcessRewardModel:
        path = str(resolve_model(cfg.backbone))
        device = _device(cfg.device)
        body = AutoModel.from_pretrained(path, dtype=DTYPES[cfg.dtype]).to(device)
        return cls(body, AutoTokenizer.from_pretrained(path), cfg, path)

    @property
    def device(self) -> torch.device:
        return next(self.body.parameters()).device

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

    def hidden(self, batch: list[Encoded]) -> torch.Tensor:
        """Last-layer hidden states (batch, width, hidden) of right-padded examples."""
        width = max(len(e.ids) for e in batch)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([e.ids + [pad] * (width - len(e.ids)) for e in batch], device=self.device)
        mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in batch], device=self.device)
        return self.body(input_ids=ids, attention_mask=mask).last_hidden_state.float()

    def step_logits(self, batch: list[Encoded]) -> torch.Tensor:
        """Logits (total kept steps, 2) for a batch, steps in example order."""
        hidden = self.hidden(batch)
        return self.head(torch.cat([hidden[i, e.positions] for i, e in enumerate(batch)]))

    @torch.no_grad()
    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """P(good) per step for each (question, steps); nan for steps cut by ``max_length``."""
        self.eval()
        out: list[list[float]] = []
        for chunk in _chunks(list(items), self.cfg.batch_size):
            enc = [self.encode(q, s) for q, s in chunk]
            probs = self.step_logits(enc).softmax(-1)[:, GOOD].tolist() if any(e.positions for e in enc) else []
            it = iter(probs)
            for e in enc:
                kept = [next(it) for _ in e.positions]
                out.append(kept + [math.nan] * (e.n_steps - len(kept)))
        return out

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return self.score_batch([(question, steps)])[0]

    # ------------------------------------------------------------ save / load

    def save(self, out_dir: str | Path) -> Path:
        """Head weights + config JSON; the body path is recorded, or the body saved when it was trained.

        A frozen body is referenced by its local path (not copied), so such a PRM folder is portable only
        together with that body folder.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        body_path = self.body_path
        if not self.cfg.freeze_body:
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


# ---------------------------------------------------------------- training


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def step_targets(row: Mapping[str, Any], kind: str) -> list[float]:
    """Per-step targets of a TRL stepwise row: hard = value > 0 (bool labels count as 0/1); soft = value.

    Soft training reads ``soft_labels`` where the row has them (the ``prm_dataset`` table), else ``labels``.
    """
    values = (row.get("soft_labels") or row["labels"]) if kind == "soft" else row["labels"]
    return [float(v) if kind == "soft" else float(float(v) > 0) for v in values]


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hard":
        return F.cross_entropy(logits, targets.long())
    return F.binary_cross_entropy_with_logits(logits[:, GOOD] - logits[:, 1 - GOOD], targets)


def _targets(batch_rows: list[Mapping[str, Any]], batch: list[Encoded], kind: str, device: torch.device):
    values = [t for r, e in zip(batch_rows, batch, strict=True) for t in step_targets(r, kind)[:len(e.positions)]]
    return torch.tensor(values, device=device)


def mean_loss(model: ProcessRewardModel, rows: Sequence[Mapping[str, Any]]) -> float:
    """Loss over ``rows`` without training (e.g. before and after ``train``)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in _chunks(list(rows), model.cfg.batch_size):
            enc = [model.encode(r["prompt"], r["completions"]) for r in chunk]
            targets = _targets(chunk, enc, model.cfg.label_kind, model.device)
            if len(targets):
                total += loss_fn(model.step_logits(enc), targets, model.cfg.label_kind).item() * len(targets)
                count += len(targets)
    return total / count if count else math.nan


def train(model: ProcessRewardModel, rows: Sequence[Mapping[str, Any]]) -> TrainReport:
    """Train on TRL stepwise rows ``{prompt, completions, labels}`` (plain dicts); returns epoch losses."""
    cfg, start = model.cfg, time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rows = list(rows)
    enc = [model.encode(r["prompt"], r["completions"]) for r in rows]
    cached = _body_features(model, enc) if cfg.freeze_body else None
    order, rng, losses = list(range(len(rows))), random.Random(cfg.seed), []
    model.train()
    for _ in range(cfg.epochs):
        rng.shuffle(order)
        total, count = 0.0, 0
        for idx in _chunks(order, cfg.batch_size):
            batch = [enc[i] for i in idx]
            targets = _targets([rows[i] for i in idx], batch, cfg.label_kind, model.device)
            if not len(targets):
                continue
            feats = torch.cat([cached[i] for i in idx]) if cached is not None else None
            logits = model.head(feats) if feats is not None else model.step_logits(batch)
            loss = loss_fn(logits, targets, cfg.label_kind)
            opt.zero_grad()
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            total, count = total + loss.item() * len(targets), count + len(targets)
        losses.append(total / count if count else math.nan)
    model.eval()
    return TrainReport(losses, len(rows), sum(len(e.positions) for e in enc), time.perf_counter() - start)


@torch.no_grad()
def _body_features(model: ProcessRewardModel, enc: list[Encoded]) -> list[torch.Tensor]:
    """Hidden states at each example's step positions, computed once (the body is frozen)."""
    out = []
    for batch in _chunks(enc, model.cfg.batch_size):
        hidden = model.hidden(batch)
        out += [hidden[i, e.positions] for i, e in enumerate(batch)]
    return out
