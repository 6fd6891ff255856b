"""The run config: one typed model per section, loaded from a short TOML recipe.

Unknown keys and wrong types are errors (``extra="forbid"``); ``ConfigError`` carries a one-line message
naming the key, which the CLI prints before exiting with code 2. Validation does no I/O.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart.toml"


class ConfigError(ValueError):
    """A bad config: the message is one line naming the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProblemsConfig(_Section):
    source: str = "arith"  # "arith" (built-in generator) or a path to a JSONL/JSON/Parquet file
    format: Literal["auto", "gsm8k", "math", "processbench", "open"] = "auto"  # file format; auto-detected by keys
    n: int = Field(8, ge=0)  # arith: problems to generate; files: the first n usable rows (0 = all)
    gold_files: list[str] = []  # GSM8K/MATH files giving gold answers by question (ProcessBench input has none)
    seed: int = 0
    mix: dict[int, float] = Field(default_factory=lambda: {1: 0.5, 2: 0.5})  # arith: P(number of steps)

    @field_validator("mix")
    @classmethod
    def _mix_ok(cls, mix: dict[int, float]) -> dict[int, float]:
        if not mix or any(k < 1 or k > 12 for k in mix) or any(v < 0 for v in mix.values()) \
                or sum(mix.values()) <= 0:
            raise ValueError("mix maps step counts 1..12 to non-negative weights with a positive sum")
        return mix


class EngineConfig(_Section):
    backend: Literal["transformers", "sim", "vllm", "openai"] = "transformers"
    model: str = "smollm2-135m-instruct"  # registry name or a local HF-format folder
    replicas: int = Field(1, ge=1)  # engine actors (one per GPU on a cluster)
    num_gpus: float = Field(0, ge=0)  # per actor
    num_cpus: float = Field(1, ge=0)  # per actor
    max_batch_size: int = Field(16, ge=1)  # sequences decoded together inside one engine
    options: dict[str, Any] = Field(default_factory=dict)  # backend-specific arguments


class SamplingSection(_Section):
    n_solutions: int = Field(4, ge=1)  # solutions sampled per problem
    max_new_tokens: int = Field(256, ge=1)  # per solution or rollout
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    delimiter: str = Field("\n\n", min_length=1)  # step separator
    seed: int = 0
    few_shot: int = Field(1, ge=0)  # worked examples put before the question
    system_prompt: str = ""
    style: Literal["step-by-step", "chain-of-draft"] = "step-by-step"  # prompt preset (search.sampling.PROMPT_STYLES)


class LabelingConfig(_Section):
    strategy: Literal["linear", "binary", "adaptive", "mcts"] = "linear"
    options: dict[str, Any] = Field(default_factory=dict)  # the strategy's own config (e.g. k = 4)


class MiningConfig(_Section):
    kinds: list[Literal["shortest", "backtrack", "journey"]] = ["shortest", "backtrack"]  # mined after labeling
    mode: Literal["verified", "answer-only"] = "verified"  # shortest: every step labeled good, or answer only
    datasets: bool = True  # also build prm_dataset and sft_dataset
    prm_after_error: Literal["cut", "mask"] = "cut"  # PRM rows: steps after the first error cut, or kept unlabeled


class StorageConfig(_Section):
    root: str = "tracemill_data"  # runs/, staging/ and catalog.duckdb live here
    shard_size: int = Field(64, ge=1)  # problems per committed shard


class RayConfig(_Section):
    address: str = ""  # "" starts a local Ray; "auto" or "ray://host:10001" joins a cluster
    num_cpus: int | None = None  # local Ray only
    max_retries: int = Field(3, ge=0)  # per request, after an engine actor dies


class RunConfig(_Section):
    name: str = "run"
    problems: ProblemsConfig = ProblemsConfig()
    engine: EngineConfig = EngineConfig()
    sampling: SamplingSection = SamplingSection()
    labeling: LabelingConfig = LabelingConfig()
    mining: MiningConfig = MiningConfig()
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def parse_config(data: dict[str, Any], model: type[BaseModel] = RunConfig) -> Any:
    """``data`` as a ``model`` (a run config by default; ``tracemill search`` passes its own)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        got = first.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        raise ConfigError(f"config error: {key}: {msg}{got_s}") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                model: type[BaseModel] = RunConfig, default: Path = DEFAULT_CONFIG) -> Any:
    """Read a TOML recipe (default: configs/quickstart.toml) and apply dotted-key overrides."""
    path = Path(path) if path else default
    if not path.is_file():
        raise ConfigError(f"config error: file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config error: {path}: not valid TOML: {err}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config error: {dotted}: {part} is not a section")
        node[leaf] = value
    return parse_config(data, model)
