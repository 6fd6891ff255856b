"""The busy-engine benchmark: generated tokens/s of a real run on the vLLM backend against raw ``LLM.generate``.

Run: ``PYTHONPATH=. python -m benchmarks.engine_vllm [--problems 64] [--config configs/quickstart.toml]``.

1. A quickstart run (``configs/quickstart.toml`` with ``engine.backend = "vllm"``) on ``--problems`` problems;
   every request the run sends to its engines (prompt, prefix, n, max tokens, sampling, seed, stop) and every
   result's completion tokens are recorded where they are sent: in the search workers, by a Ray
   ``worker_process_setup_hook`` (``record_in_worker``) that wraps ``EnginePool.submit`` and ``_deliver``. Pipeline tokens/s is
   the generated tokens over the search phase's wall time (``summary.search_wall_s``: from every engine
   loaded to the last shard committed, the tree search waiting on them between waves, Ray and the pool in the
   middle); the engine load (``summary.startup_s``) is outside it, as building ``LLM`` is outside the raw timing.
2. The same requests, tokenized as the vLLM backend does (prompt and prefix separately), replayed in this
   process through ``vllm.LLM.generate`` as ONE batch with the same ``SamplingParams`` and engine arguments:
   the engine alone, fed everything at once (an upper bound: no wave has to wait for the one before it).
3. The orchestration cost per request: the same config on the zero-latency ``sim`` engine, requests/s of
   the search loop (the pipeline's own overhead, with generation free).

The last line is ``pipeline/raw tokens-per-second ratio: X.XX`` (goal >= 0.9 on CPU).
Extra ``--set key=value`` overrides go to the run config (e.g. ``--set engine.options.kv_cache_memory_bytes=4294967296``
on a GPU; see configs/vllm_gpu.toml and benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cluster.engine import GenRequest, GenResult
from cluster.pool import EnginePool
from cluster.vllm_engine import VLLMConfig, engine_kwargs, has_gpu, sampling_kwargs

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: benchmarks/storage.py would shadow the storage package

CPU_OPTIONS = {"max_model_len": 4096}  # the CPU default KV cache (cluster.vllm_engine.CPU_KV_CACHE_BYTES)


RECORD_ENV = "TRACEMILL_BENCH_RECORD"  # folder the search workers write what they send and receive to


def record_in_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for the vLLM run: in every worker process of that run, wrap
    ``EnginePool.submit`` and ``EnginePool._deliver`` so the search workers (which own the pools that send
    the run's requests) append each request and each result's completion tokens to ``<folder>/<pid>.jsonl``."""
    folder = os.environ.get(RECORD_ENV)
    if not folder:
        return
    path = Path(folder) / f"{os.getpid()}.jsonl"
    submit, deliver = EnginePool.submit, EnginePool._deliver

    def recording_submit(pool: EnginePool, requests: list[GenRequest]) -> int:
        with path.open("a") as f:
            f.writelines(json.dumps({"request": request_record(r)}) + "\n" for r in requests)
        return submit(pool, requests)

    def recording_deliver(pool: EnginePool, key: str, result: GenResult) -> None:
        with path.open("a") as f:
            f.write(json.dumps({"key": key, "completion_tokens": result.completion_tokens}) + "\n")
        return deliver(pool, key, result)

    EnginePool.submit, EnginePool._deliver = recording_submit, recording_deliver


class Recorder:
    """Every request the run's pools were asked for (first time per key) and the completion tokens delivered,
    read back from the files ``record_in_worker`` wrote."""

    def __init__(self, folder: Path) -> None:
        self.requests: dict[str, GenRequest] = {}
        self.completion_tokens: dict[str, int] = {}
        for path in sorted(folder.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                item = json.loads(line)
                if "request" in item:
                    r = item["request"]
                    self.requests.setdefault(r["request_key"], GenRequest(**{**r, "stop": tuple(r["stop"])}))
                else:
                    self.completion_tokens.setdefault(item["key"], item["completion_tokens"])


def request_record(req: GenRequest) -> dict[str, Any]:
    return {"request_key": req.request_key, "prompt": req.prompt, "prefix": req.prefix, "n": req.n,
            "max_new_tokens": req.max_new_tokens, "temperature": req.temperature, "top_p": req.top_p,
            "seed": req.seed, "stop": list(req.stop)}


def run_config(args: argparse.Namespace, backend: str, root: Path) -> Any:
    """The config file with ``--set`` overrides; the vLLM run gets CPU-sized options on a CPU, the sim run the
    same engine actors with none of vLLM's keys (the sim refuses them)."""
    from pipelines.config import load_config, parse_config

    overrides: dict[str, Any] = {"problems.n": args.problems, "storage.root": str(root), "engine.backend": "vllm"}
    options: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        if key.startswith("engine.options."):
            options[key.removeprefix("engine.options.")] = value
        else:
            overrides[key] = value
    if backend != "vllm":
        data = load_config(args.config, {**overrides, "engine.options": {}}).model_dump(mode="json")
        data["engine"] = {"backend": backend, **{k: data["engine"][k] for k in ("replicas", "num_cpus", "num_gpus")}}
        return parse_config(data)
    in_file = load_config(args.config, overrides).engine.options.model_dump()
    defaults = {} if has_gpu() else CPU_OPTIONS
    return load_config(args.config, {**overrides, "engine.options": {**defaults, **in_file, **options}})


def worker_pythonpath() -> str:
    """The checkout first on the workers' path: the installed package holds the five stages, not
    ``benchmarks``, and the setup hook is imported from there in every worker."""
    checkout = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH", "")) if p)


def pipeline_run(args: argparse.Namespace, root: Path) -> tuple[Any, Any, Recorder]:
    """The quickstart-style run on vLLM, its Ray started here with the recording hook in every worker."""
    import ray

    from pipelines.run import execute

    cfg = run_config(args, "vllm", root)
    folder = root.parent / "recorded"
    folder.mkdir(parents=True)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": "benchmarks.engine_vllm.record_in_worker",
                          "env_vars": {RECORD_ENV: str(folder), "PYTHONPATH": worker_pythonpath()}})
    try:
        summary = execute(cfg, run_id="bench-vllm", progress=False, report=False)
    finally:
        ray.shutdown()
    return cfg, summary, Recorder(folder)


def sim_run(args: argparse.Namespace, root: Path) -> Any:
    from pipelines.run import execute

    return execute(run_config(args, "sim", root), run_id="bench-sim", progress=False, report=False)


def raw_replay(cfg: Any, requests: list[GenRequest]) -> tuple[float, int, int]:
    """(seconds, generated tokens, samples) of one ``LLM.generate`` over ``requests``, encoded as the backend does."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from cluster.models import resolve_model

    path = str(resolve_model(cfg.engine.model))
    vcfg = VLLMConfig(**{**cfg.engine.engine_kwargs(cfg.sampling.delimiter), "model": path})
    kwargs = {k: v for k, v in engine_kwargs(vcfg, has_gpu()).items() if v is not None}
    tok = AutoTokenizer.from_pretrained(path)
    bos = tok.bos_token

    def encode(req: GenRequest) -> list[int]:
        ids = list(tok(req.prompt, add_special_tokens=not (bos and req.prompt.startswith(bos)))["input_ids"])
        return ids + (list(tok(req.prefix, add_special_tokens=False)["input_ids"]) if req.prefix else [])

    llm = LLM(model=path, **kwargs)
    prompts = [TokensPrompt(prompt_token_ids=encode(r)) for r in requests]
    params = [SamplingParams(**sampling_kwargs(r)) for r in requests]
    try:
        llm.generate(prompts[:1], [SamplingParams(max_tokens=2)], use_tqdm=False)  # warm-up
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
    finally:
        llm.llm_engine.engine_core.shutdown()  # else the engine-core process can outlive the script
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return seconds, tokens, sum(len(o.outputs) for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--config", default="configs/quickstart.toml")
    parser.add_argument("--set", action="append", default=[], help="run config override key=value (JSON value)")
    parser.add_argument("--record", default="", help="also write the recorded requests to this JSONL file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engine_vllm_") as tmp:
        cfg, summary, rec = pipeline_run(args, Path(tmp) / "vllm")
        sim = sim_run(args, Path(tmp) / "sim")
    requests = list(rec.requests.values())
    if args.record:
        with open(args.record, "w") as f:
            for req in requests:
                f.write(json.dumps(request_record(req)) + "\n")
    pipe_tokens = sum(rec.completion_tokens.values())
    pipe_rate = pipe_tokens / summary.search_wall_s
    raw_s, raw_tokens, raw_samples = raw_replay(cfg, requests)
    raw_rate = raw_tokens / raw_s
    sim_rate = sim.meter.usage.requests / sim.search_wall_s
    print(f"model={cfg.engine.model} gpu={has_gpu()} problems={args.problems} options={cfg.engine.options.model_dump()}")
    print(f"recorded requests: {len(requests)} ({sum(r.n for r in requests)} samples, "
          f"{sum(not r.prefix for r in requests)} without a prefix); the pool counted {summary.meter.usage.requests}")
    print(f"pipeline: {pipe_tokens} tokens in {summary.search_wall_s:.1f} s search wall "
          f"({summary.wall_s:.1f} s whole run, {summary.startup_s:.1f} s start-up), engine busy {summary.engine_busy_s:.1f} s: {pipe_rate:.1f} tokens/s")
    print(f"raw LLM.generate, one batch: {raw_tokens} tokens ({raw_samples} samples) in {raw_s:.1f} s: "
          f"{raw_rate:.1f} tokens/s")
    print(f"orchestration (sim engine, zero latency): {sim.meter.usage.requests} requests in {sim.search_wall_s:.2f} s = "
          f"{sim_rate:.0f} requests/s, {1000 / sim_rate:.2f} ms per request")
    print(f"pipeline/raw tokens-per-second ratio: {pipe_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
