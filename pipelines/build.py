"""Build: a parsed config turned into the library objects a job runs with, and a new run's identity.

``sampling_config`` (the search's sampling, with the worked examples of every problem family),
``labeling_options`` (the strategy's options; rollouts sample like the solutions unless told otherwise) and
``actor_spec`` (how to build and place an engine actor) are shared by ``tracemill run``/``label`` and
``tracemill search``, so both read a config the same way; ``open_judge`` (the LLM judge of open prompts)
is ``tracemill run``/``label``'s.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

from cluster.actors import ActorSpec
from cluster.problems.few_shot import few_shot_examples
from pipelines.config import RunConfig
from search.labeling import STRATEGIES
from search.sampling import SamplingConfig
from search.tools import ToolConfig
from verifier.judge_llm import JudgeConfig


def sampling_config(cfg: RunConfig) -> SamplingConfig:
    """The search's sampling settings: ``[sampling]`` plus the python tool of ``[tools]`` (a guided-search
    recipe has no ``[tools]``: its strategies sample without tool calls)."""
    s = cfg.sampling
    tools = getattr(cfg, "tools", None)
    return SamplingConfig(n_solutions=s.n_solutions, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                          top_p=s.top_p, delimiter=s.delimiter, seed=s.seed,
                          few_shot=few_shot_examples(s.few_shot, s.delimiter),
                          system_prompt=s.system_prompt or None, style=s.style,
                          tools=ToolConfig(**tools.model_dump()) if tools is not None else ToolConfig())


def open_judge(cfg: RunConfig) -> JudgeConfig | None:
    """The LLM judge of open prompts (``labeling.judge``, seeded like the sampling), or None under
    self-consistency; only problems without a gold answer are judged (``search.labeling.judged_gold``)."""
    if cfg.labeling.open_gold != "llm-judge":
        return None
    j = cfg.labeling.judge
    return JudgeConfig(n=j.n, max_new_tokens=j.max_new_tokens, temperature=j.temperature, seed=cfg.sampling.seed)


def labeling_options(cfg: RunConfig) -> dict[str, Any]:
    """The strategy's options; rollouts sample like the solutions unless ``options.rollout`` says otherwise."""
    s = cfg.sampling
    rollout = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed,
               "tools": cfg.tools.model_dump()}
    options = dict(cfg.labeling.options)
    options["rollout"] = {**rollout, **options.get("rollout", {})}
    if "delimiter" in {f.name for f in fields(STRATEGIES[cfg.labeling.strategy].config)}:
        options.setdefault("delimiter", s.delimiter)  # mcts splits rollouts into steps
    return options


def actor_spec(cfg: RunConfig) -> ActorSpec:
    """How to build and place one engine actor: the backend's name, the config its factory gets (the engine
    section decides, ``pipelines.config``), and the CPUs and GPUs Ray reserves for it."""
    e = cfg.engine
    return ActorSpec(backend=e.backend, engine=e.engine_kwargs(cfg.sampling.delimiter), num_cpus=e.num_cpus,
                     num_gpus=e.num_gpus)


def new_run_id(cfg: RunConfig) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def code_version() -> str:
    """The git commit of this checkout, or the package version when not run from git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    return "0.1.0"
