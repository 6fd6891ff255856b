"""The run config: one typed model per section, loaded from a short TOML recipe.

Unknown keys and wrong types are errors (``extra="forbid"``, and strict scalars: ``true`` is not an integer,
``1e12`` is not a token count, ``"yes"`` is not a boolean); numbers have bounds a real run can meet (token
limits below ``MAX_NEW_TOKENS`` and the engine's ``max_model_len`` when set); every string must be valid
UTF-8 and every float finite. ``ConfigError`` carries a one-line message naming the key, which the CLI prints
before exiting with code 2. Validation does no I/O.

``[engine]`` is one model per backend, chosen by ``backend`` (a discriminated union): each registered backend
of ``cluster.backends`` takes only the keys it reads, its ``options`` typed from its own config dataclass, and
knows the config its factory gets (``engine_kwargs``) and the model a run records; any other name must be a
``"package.module:callable"`` plugin, whose options its factory checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_type_hints

import tomllib
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    StrictBool,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from cluster.backends import BACKENDS, is_plugin_name

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


class _Options(BaseModel):
    """``engine.options`` of a registered backend: the fields of its config dataclass (``cluster.backends``), typed
    as the dataclass declares them, minus those other keys of the run config set.

    A dump holds only the keys the recipe gave, so the stored config says what was asked for and the backend's
    own defaults (``None`` = "decide on the machine", for vLLM) still apply when the engine is built.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    backend: ClassVar[str]
    from_engine: ClassVar[dict[str, str]]  # backend config field -> the [engine] key that sets it

    @model_serializer(mode="wrap")
    def _given(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in dump(self).items() if key in self.model_fields_set}

    def backend_kwargs(self, engine: Mapping[str, Any]) -> dict[str, Any]:
        """The backend config's keyword arguments: these options plus the fields ``engine`` (the section) sets."""
        return {**{field: engine[key] for field, key in self.from_engine.items()}, **self.model_dump()}


def backend_options(name: str, backend: str, from_engine: dict[str, str],
                    from_run: tuple[str, ...] = ()) -> type[_Options]:
    """The ``engine.options`` model of ``backend``, derived from its config dataclass: every field except those
    set by ``[engine]`` keys (``from_engine``: field -> key) or by other sections (``from_run``). ``name`` is
    the module-level name it is bound to, so a config pickles (pickle finds classes by name)."""
    config = BACKENDS[backend].config
    hints = get_type_hints(config)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        if field.name in from_engine or field.name in from_run:
            continue
        if field.default is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], field.default)
        elif field.default_factory is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], Field(default_factory=field.default_factory))
        else:
            fields[field.name] = (hints[field.name], ...)
    options = create_model(name, __base__=_Options, __module__=__name__, **fields)
    options.backend, options.from_engine = backend, from_engine
    return options


DEFAULT_MODEL = "smollm2-135m-instruct"
TransformersOptions = backend_options("TransformersOptions", "transformers",
                                      {"model": "model", "max_batch_size": "max_batch_size"})
VLLMOptions = backend_options("VLLMOptions", "vllm", {"model": "model", "max_num_seqs": "max_batch_size"})
OpenAIOptions = backend_options("OpenAIOptions", "openai", {"model": "model", "max_concurrency": "max_batch_size"})
SimOptions = backend_options("SimOptions", "sim", {}, from_run=("delimiter",))  # steps split at sampling.delimiter


class _EngineSection(_Section):
    """The keys every backend shares: which backend, how many engine actors, and what Ray reserves for each."""

    backend: str  # a name of cluster.backends.BACKENDS or "package.module:callable"
    replicas: Int = Field(1, ge=1, le=4096)  # engine actors (one per GPU on a cluster)
    num_gpus: Float = Field(0, ge=0, le=64)  # per actor
    num_cpus: Float = Field(1, ge=0, le=1024)  # per actor

    @abstractmethod
    def engine_kwargs(self, delimiter: str) -> dict[str, Any]:
        """The config the backend's factory is called with (``delimiter``: the run's ``sampling.delimiter``)."""

    @property
    @abstractmethod
    def recorded_model(self) -> str:
        """The model a run records in ``runs.model``."""

    @property
    def max_model_len(self) -> int | None:
        """The engine's context in tokens where the config sets it (token limits must stay below it)."""
        return None


class _RegisteredEngine(_EngineSection):
    """A backend of ``cluster.backends.BACKENDS``; ``options`` (declared last) holds its config's other fields."""

    def engine_kwargs(self, delimiter: str) -> dict[str, Any]:
        return self.options.backend_kwargs(dict(self))

    @field_validator("options", check_fields=False)
    @classmethod
    def _backend_accepts(cls, options: _Options, info: ValidationInfo) -> _Options:
        """Build the backend's config now, so what its own checks refuse (a bound, a missing tokenizer) fails
        while parsing instead of inside a Ray actor. Skipped when an [engine] key it needs failed already."""
        if set(options.from_engine.values()) <= info.data.keys():
            BACKENDS[options.backend].config(**options.backend_kwargs(info.data))
        return options


class TransformersEngineConfig(_RegisteredEngine):
    """``transformers``: the in-process engine (``cluster.transformers_engine``)."""

    backend: Literal["transformers"] = "transformers"
    model: str = DEFAULT_MODEL  # registry name or a local HF-format folder
    max_batch_size: Int = Field(16, ge=1, le=65_536)  # sample rows decoded together inside one engine
    options: TransformersOptions = TransformersOptions()  # device, dtype, share_prefix, num_threads, engine_id

    @property
    def recorded_model(self) -> str:
        return self.model


class VLLMEngineConfig(_RegisteredEngine):
    """``vllm``: ``cluster.vllm_engine``; ``options`` are ``VLLMConfig``'s fields (``engine_args`` goes to vLLM)."""

    backend: Literal["vllm"] = "vllm"
    model: str = DEFAULT_MODEL  # registry name or a local HF-format folder
    # sequences decoded together inside one engine: vLLM's max_num_seqs; unset, vLLM's default for the platform
    max_batch_size: Int | None = Field(None, ge=1, le=65_536)
    options: VLLMOptions = VLLMOptions()

    @property
    def recorded_model(self) -> str:
        return self.model

    @property
    def max_model_len(self) -> int | None:
        return self.options.max_model_len


class OpenAIEngineConfig(_RegisteredEngine):
    """``openai``: a running OpenAI-compatible server (``cluster.openai_engine``); ``options.base_url`` is required."""

    backend: Literal["openai"] = "openai"
    model: str = ""  # the served model's name; "" sends none (a server of one model, e.g. llama.cpp)
    max_batch_size: Int = Field(16, ge=1, le=65_536)  # HTTP requests in flight per engine
    options: OpenAIOptions

    @property
    def recorded_model(self) -> str:
        return self.model or self.options.base_url


class SimEngineConfig(_RegisteredEngine):
    """``sim``: the synthetic policy (``cluster.sim_engine``); no model, so neither ``model`` nor a batch size."""

    backend: Literal["sim"] = "sim"
    options: SimOptions = SimOptions()  # error rates, latencies, seed, continuous, ...

    def engine_kwargs(self, delimiter: str) -> dict[str, Any]:
        return {**super().engine_kwargs(delimiter), "delimiter": delimiter}

    @property
    def recorded_model(self) -> str:
        return "sim"


class PluginEngineConfig(_EngineSection):
    """A ``"package.module:callable"`` backend: the factory gets ``options`` as they are and validates them."""

    options: dict[str, Any] = Field(default_factory=dict)  # the factory's own arguments

    @field_validator("backend")
    @classmethod
    def _plugin_name(cls, name: str) -> str:
        if not is_plugin_name(name):
            known = ", ".join(repr(b) for b in sorted(BACKENDS))
            raise ValueError(f"unknown backend; one of {known} or a 'package.module:callable' name")
        return name

    def engine_kwargs(self, delimiter: str) -> dict[str, Any]:
        return dict(self.options)

    @property
    def recorded_model(self) -> str:
        """``options.model`` when the plugin takes one, else its name."""
        model = self.options.get("model")
        return model if isinstance(model, str) and model else self.backend


ENGINE_CONFIGS: dict[str, type[_RegisteredEngine]] = {
    "transformers": TransformersEngineConfig, "vllm": VLLMEngineConfig, "openai": OpenAIEngineConfig,
    "sim": SimEngineConfig,
}  # one per name of cluster.backends.BACKENDS
PLUGIN = "package.module:callable"  # the union tag of PluginEngineConfig


def _engine_tag(engine: Any) -> str:
    """Which engine config validates ``engine``: its backend's, or the plugin's for any other name."""
    backend = engine.get("backend", "transformers") if isinstance(engine, dict) else getattr(engine, "backend", None)
    return backend if isinstance(backend, str) and backend in ENGINE_CONFIGS else PLUGIN


# the [engine] section: a discriminated union on `backend` (errors name the key, not the union member)
EngineConfig = Annotated[
    Union[tuple(Annotated[config, Tag(name)] for name, config in ENGINE_CONFIGS.items())  # noqa: UP007
          + (Annotated[PluginEngineConfig, Tag(PLUGIN)],)],
    Discriminator(_engine_tag),
]


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
        if self.judge != JudgeSection() and self.open_gold != "llm-judge":  # (a stored config holds the defaults)
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
    engine: EngineConfig = TransformersEngineConfig()
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
        context = self.engine.max_model_len
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
        loc, tag = _untagged(first["loc"])
        key = ".".join(str(p) for p in loc)
        msg = first["msg"].removeprefix("Value error, ")
        if not key:  # a check across sections (RunConfig._fits): the message names its keys
            raise ConfigError(f"config error: {msg}") from None
        if first["type"] == "extra_forbidden":
            msg = ("unknown key" if tag is None else f"unknown key for backend {tag!r}" if tag != PLUGIN
                   else "unknown key for a plugin backend (its arguments go in engine.options)")
        got = first.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {_short(repr(got))})"
        raise ConfigError(f"config error: {key}: {msg}{got_s}") from None


def _untagged(loc: tuple[int | str, ...]) -> tuple[list[int | str], str | None]:
    """``loc`` without the union tag pydantic puts after ``engine`` (the backend), and that tag if there was one."""
    if len(loc) > 1 and loc[0] == "engine" and (loc[1] in ENGINE_CONFIGS or loc[1] == PLUGIN):
        return [loc[0], *loc[2:]], str(loc[1])
    return list(loc), None


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
