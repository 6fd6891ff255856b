"""The run config: one typed model per section, loaded from a short TOML recipe.

Unknown keys and wrong types are errors (``extra="forbid"``, and strict scalars: ``true`` is not an integer,
``1e12`` is not a token count, ``"yes"`` is not a boolean); numbers have bounds a real run can meet (token
limits below ``MAX_NEW_TOKENS`` and the engine's ``max_model_len`` when set); every string must be valid
UTF-8 and every float finite. ``ConfigError`` carries a one-line message naming the key, which the CLI prints
before exiting with code 2. Validation does no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart.toml"
MAX_NEW_TOKENS = 131_072  # per generation: the longest context of current open models; engines cap lower
MAX_PROBLEMS = 10_000_000  # problems.n: beyond this a run is a sharded job, not one config
MAX_SEED = 2**63 - 1  # seeds reach engines as int64
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,99}$"  # the run name starts run ids, which are path components

Int = Annotated[int, Strict()]  # no bool, float or string coercion: `n = true` or `n = 1e12` is an error
Float = Annotated[float, Strict(), AllowInfNan(False)]  # ints are accepted (`temperature = 1`), nan/inf not
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]


class ConfigError(ValueError):
    """A bad config: the message is one line naming the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProblemsConfig(_Section):
    source: str = "arith"  # "arith" (built-in generator) or a path to a JSONL/JSON/Parquet file
    format: Literal["auto", "gsm8k", "math", "processbench", "open"] = "auto"  # file format; auto-detected by keys
    n: Int = Field(8, ge=0, le=MAX_PROBLEMS)  # arith: problems to generate; files: the first n usable rows (0 = all)
    gold_files: list[str] = []  # GSM8K/MATH files giving gold answers by question (ProcessBench input has none)
    seed: Seed = 0
    mix: dict[int, Float] = Field(default_factory=lambda: {1: 0.5, 2: 0.5})  # arith: P(number of steps)

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
    replicas: Int = Field(1, ge=1, le=4096)  # engine actors (one per GPU on a cluster)
    num_gpus: Float = Field(0, ge=0, le=64)  # per actor
    num_cpus: Float = Field(1, ge=0, le=1024)  # per actor
    max_batch_size: Int = Field(16, ge=1, le=65_536)  # sequences decoded together inside one engine
    options: dict[str, Any] = Field(default_factory=dict)  # backend-specific arguments

    @property
    def recorded_model(self) -> str:
        """The model a run records in ``runs.model`` (the sim is no model)."""
        return "sim" if self.backend == "sim" else self.model


class SamplingSection(_Section):
    n_solutions: Int = Field(4, ge=1, le=4096)  # solutions sampled per problem
    max_new_tokens: Int = Field(256, ge=1, le=MAX_NEW_TOKENS)  # per solution or rollout
    temperature: Float = Field(0.7, ge=0, le=100)
    top_p: Float = Field(0.95, gt=0, le=1)
    delimiter: str = Field("\n\n", min_length=1)  # step separator
    seed: Seed = 0
    few_shot: Int = Field(1, ge=0, le=64)  # worked examples of the problem's own family; open prompts get none
    system_prompt: str = ""
    style: Literal["step-by-step", "chain-of-draft"] = "step-by-step"  # prompt preset (search.sampling.PROMPT_STYLES)


class ToolsSection(_Section):
    """The python tool (``search/tools.py``): code blocks run in ``verifier.sandbox`` and generation continues."""

    python: StrictBool = False  # run ```python blocks of solutions and rollouts, append their output, continue
    timeout_s: Float = Field(5.0, gt=0, le=3600)  # wall clock per call
    cpu_s: Float = Field(2.0, gt=0, le=3600)  # CPU seconds per call
    memory_mb: Int = Field(512, ge=16, le=1_048_576)  # address space per call
    max_calls: Int = Field(8, ge=1, le=1024)  # calls per solution or rollout
    max_output_chars: Int = Field(1000, ge=1, le=1_000_000)  # observation text kept per call
    workers: Int = Field(2, ge=1, le=1024)  # sandbox calls run at once


class JudgeSection(_Section):
    """The LLM judge of open prompts (``verifier.judge_llm``: ProcessBench's critic prompt, on the run's engines)."""

    n: Int = Field(1, ge=1, le=64)  # critiques sampled per solution; the most common verdict wins
    max_new_tokens: Int = Field(1024, ge=1, le=MAX_NEW_TOKENS)  # per critique: it walks through every step
    temperature: Float = Field(0.0, ge=0, le=100)  # greedy by default; n > 1 needs a temperature above 0

    @model_validator(mode="after")
    def _votes_differ(self) -> JudgeSection:
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 needs temperature > 0 (greedy critiques are all the same)")
        return self


class LabelingConfig(_Section):
    strategy: Literal["linear", "binary", "adaptive", "mcts"] = "linear"
    options: dict[str, Any] = Field(default_factory=dict)  # the strategy's own config (e.g. k = 4)
    # how an open prompt (no gold answer) gets its pseudo-gold: the majority answer of its sampled solutions, or
    # the majority answer of those the LLM judge finds no error in; problems with a gold answer ignore it
    open_gold: Literal["self-consistency", "llm-judge"] = "self-consistency"
    judge: JudgeSection = JudgeSection()  # read only with open_gold = "llm-judge"

    @model_validator(mode="after")
    def _judge_read(self) -> LabelingConfig:
        if "judge" in self.model_fields_set and self.open_gold != "llm-judge":
            raise ValueError('judge is set but open_gold is not "llm-judge" (the only mode that reads it)')
        return self


class MiningConfig(_Section):
    kinds: list[Literal["shortest", "backtrack", "journey"]] = ["shortest", "backtrack"]  # mined after labeling
    mode: Literal["verified", "answer-only"] = "verified"  # shortest: every step labeled good, or answer only
    datasets: StrictBool = True  # also build prm_dataset and sft_dataset
    prm_after_error: Literal["cut", "mask"] = "cut"  # PRM rows: steps after the first error cut, or kept unlabeled


class StorageConfig(_Section):
    root: str = Field("tracemill_data", min_length=1)  # runs/, staging/ and catalog.duckdb live here
    shard_size: Int = Field(64, ge=1, le=1_000_000)  # problems per committed shard


class RayConfig(_Section):
    address: str = ""  # "" starts a local Ray; "auto" or "ray://host:10001" joins a cluster
    num_cpus: Int | None = Field(None, ge=1, le=4096)  # local Ray only (default: every core); 0 could place nothing
    max_retries: Int = Field(3, ge=0, le=100)  # per request, after an engine actor dies
    # seconds the run's actors may wait for Ray to place them before the run fails (exit 2): on a joined or
    # autoscaling cluster a node may still come; a local Ray's shortfall fails at once (cluster/resources.py)
    placement_timeout_s: Float = Field(60.0, gt=0, le=86_400)
    search_workers: Int = Field(2, ge=1, le=4096)  # Ray actors running the search programs, each committing its shards


class RunConfig(_Section):
    name: str = Field("run", pattern=NAME_PATTERN)
    problems: ProblemsConfig = ProblemsConfig()
    engine: EngineConfig = EngineConfig()
    sampling: SamplingSection = SamplingSection()
    tools: ToolsSection = ToolsSection()
    labeling: LabelingConfig = LabelingConfig()
    mining: MiningConfig = MiningConfig()
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _fits(self) -> RunConfig:
        """Checks across sections and inside free-form ``options``: a generation must fit the engine's
        context, and no string or float anywhere may break encoding or arithmetic later."""
        context = self.engine.options.get("max_model_len")
        limit = context if _is_int(context) else MAX_NEW_TOKENS + 1
        rollout = self.labeling.options.get("rollout")
        judge = self.labeling.judge.max_new_tokens if self.labeling.open_gold == "llm-judge" else 1  # else unread
        for key, tokens in [("sampling.max_new_tokens", self.sampling.max_new_tokens),
                            ("labeling.options.rollout.max_new_tokens",
                             rollout.get("max_new_tokens", 1) if isinstance(rollout, dict) else 1),
                            ("labeling.judge.max_new_tokens", judge)]:
            if not _is_int(tokens) or not 1 <= tokens < limit:
                bound = (f"below engine.options.max_model_len ({context})" if _is_int(context)
                         else f"at most {MAX_NEW_TOKENS}")
                raise ValueError(f"{key}: must be an integer from 1, {bound} (got {tokens!r})")
        _check_values("", self.model_dump())
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_values(where: str, value: object) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: not valid UTF-8 (a lone surrogate)") from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: not a finite number ({value})")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(f"{where}.{key}" if where else str(key), item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_values(f"{where}[{i}]", item)


def parse_config(data: dict[str, Any], model: type[BaseModel] = RunConfig) -> Any:
    """``data`` as a ``model`` (a run config by default; ``tracemill search`` passes its own)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if not key:  # a check across sections (RunConfig._fits): the message names its keys
            raise ConfigError(f"config error: {msg}") from None
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        got = first.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {_short(repr(got))})"
        raise ConfigError(f"config error: {key}: {msg}{got_s}") from None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def run_delimiter(record: Any) -> str:
    """The step delimiter a stored run split its solutions with (``sampling.delimiter`` of its config), so every
    later stage (mining's reflections and filters, PRM export) splits steps the same way."""
    sampling = json.loads(record.config_json or "{}").get("sampling", {})
    return sampling.get("delimiter", SamplingSection.model_fields["delimiter"].default)
