"""The ``[engine]`` section: one typed config per backend, the config each backend's factory gets, the model a
run records, and a ``"package.module:callable"`` backend run end to end from a config.

(Bad engine configs — unknown options, keys a backend does not read, malformed plugin names — are rows of
``tests/test_bad_inputs_configs.py``.)
"""

from __future__ import annotations

import json
import pickle
from dataclasses import fields

import pytest

from cluster.backends import BACKENDS, build_engine
from cluster.problems.arith import generate
from pipelines.build import actor_spec
from pipelines.config import ENGINE_CONFIGS, load_config, parse_config
from storage.catalog import Catalog
from storage.runs import read_run
from tests.cluster_fixtures import FLAKY, POISON

SERVER = "http://127.0.0.1:8000/v1"


def _engine(engine: dict, **sections) -> object:
    """A run config whose [engine] section is exactly ``engine`` (the default recipe's other sections)."""
    return load_config(None, {"engine": engine, **sections})


def test_every_registered_backend_has_a_config_whose_options_are_its_dataclass_fields():
    assert set(ENGINE_CONFIGS) == set(BACKENDS)
    set_elsewhere = {"transformers": {"model", "max_batch_size"}, "vllm": {"model", "max_num_seqs"},
                     "openai": {"model", "max_concurrency"}, "sim": {"delimiter"}}
    for name, config in ENGINE_CONFIGS.items():
        options = config.model_fields["options"].annotation
        assert set(options.model_fields) == {f.name for f in fields(BACKENDS[name].config)} - set_elsewhere[name]


@pytest.mark.parametrize("engine, sampling, expected", [
    ({"backend": "transformers", "model": "m", "max_batch_size": 4, "options": {"dtype": "bfloat16"}}, {},
     {"model": "m", "max_batch_size": 4, "dtype": "bfloat16"}),
    ({"backend": "vllm", "model": "m", "max_batch_size": 32, "options": {"max_model_len": 4096}}, {},
     {"model": "m", "max_num_seqs": 32, "max_model_len": 4096}),  # vLLM's name for the batch size
    ({"backend": "vllm", "model": "m"}, {}, {"model": "m", "max_num_seqs": None}),  # unset: vLLM's default
    ({"backend": "openai", "model": "served", "max_batch_size": 8, "options": {"base_url": SERVER, "tokenizer": "t"}},
     {}, {"model": "served", "max_concurrency": 8, "base_url": SERVER, "tokenizer": "t"}),
    ({"backend": "sim", "options": {"seed": 3}}, {"sampling.delimiter": "\n"}, {"seed": 3, "delimiter": "\n"}),
    ({"backend": FLAKY, "options": {"seed": 3, "anything": [1]}}, {}, {"seed": 3, "anything": [1]}),
], ids=["transformers", "vllm", "vllm-defaults", "openai", "sim", "plugin"])
def test_actor_spec_hands_each_backend_the_config_it_reads(engine, sampling, expected):
    cfg = _engine({**engine, "num_cpus": 0.5}, **sampling)
    spec = actor_spec(cfg)
    assert (spec.backend, spec.engine, spec.num_cpus) == (engine["backend"], expected, 0.5)
    if spec.backend in BACKENDS:  # what the actor will build is a valid config of its backend
        BACKENDS[spec.backend].config(**spec.engine)


@pytest.mark.parametrize("engine, model", [
    ({"backend": "transformers", "model": "/models/qwen"}, "/models/qwen"),
    ({"backend": "vllm", "model": "smollm2-135m-instruct"}, "smollm2-135m-instruct"),
    ({"backend": "openai", "model": "Qwen/Qwen2.5-0.5B", "options": {"base_url": SERVER, "tokenizer": "t"}},
     "Qwen/Qwen2.5-0.5B"),
    ({"backend": "openai", "options": {"base_url": SERVER, "tokenizer": "t"}}, SERVER),  # one-model server
    ({"backend": "sim"}, "sim"),
    ({"backend": FLAKY}, FLAKY),
    ({"backend": FLAKY, "options": {"model": "my-model"}}, "my-model"),
], ids=["transformers", "vllm", "openai", "openai-one-model", "sim", "plugin", "plugin-with-model"])
def test_the_recorded_model_is_what_the_backend_serves(engine, model):
    assert _engine(engine).engine.recorded_model == model


def test_stored_options_are_the_given_keys_and_the_config_reads_back_equal():
    """A run stores ``model_dump``; ``--resume`` compares it with the config given again, so it must be stable."""
    cfg = _engine({"backend": "vllm", "max_batch_size": 8, "options": {"max_model_len": 4096,
                                                                       "engine_args": {"swap_space": 1}}})
    stored = json.loads(cfg.to_json())
    assert stored["engine"]["options"] == {"max_model_len": 4096, "engine_args": {"swap_space": 1}}
    assert parse_config(stored) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg


def test_the_vllm_context_bounds_token_limits_and_other_backends_have_none():
    assert _engine({"backend": "vllm", "options": {"max_model_len": 4096}}).engine.max_model_len == 4096
    assert _engine({"backend": "sim"}).engine.max_model_len is None


def test_the_plugin_factory_builds_the_engine_the_config_names():
    spec = actor_spec(_engine({"backend": FLAKY, "options": {"seed": 3}}))
    engine = build_engine(spec.backend, spec.engine)
    assert type(engine).__name__ == "FlakySim" and engine.config.seed == 3


# ---- a plugin backend through the whole pipeline, on Ray ----------------------------------------------------

def test_a_plugin_backend_runs_end_to_end_and_its_run_records_it(ray_cluster, tmp_path):
    """``engine.backend = "tests.cluster_fixtures:flaky_sim"``: Ray workers import the factory, the run records
    its name as model and engine, and its engines are really the flaky sim: the poisoned problem fails (the sim
    would have answered it) while the others are stored."""
    specs = generate(3, seed=5, mix={1: 0.5, 2: 0.5})
    rows = [{"question": s.question, "answer": f"#### {s.answer}"} for s in specs]
    rows[1]["question"] = f"{POISON} {rows[1]['question']}"
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    root = tmp_path / "data"
    from pipelines.run import execute

    cfg = load_config(None, {"storage.root": str(root), "problems.source": str(path), "problems.n": 0,
                             "engine": {"backend": FLAKY, "num_cpus": 0.5}, "sampling.n_solutions": 2,
                             "sampling.few_shot": 0, "labeling.options": {"k": 2}, "ray.max_retries": 1,
                             "mining.datasets": False})
    execute(cfg, run_id="plugin", progress=False, report=False)

    record = read_run(root, "plugin")
    assert (record.status, record.engine, record.model) == ("finished", FLAKY, FLAKY)
    with Catalog(root, save=False) as cat:
        stored = {r["question"] for r in cat.sql("SELECT question FROM problems", run_id="plugin").to_pylist()}
        rejects = cat.sql("SELECT stage, reason FROM rejects", run_id="plugin").to_pylist()
    assert stored == {rows[0]["question"], rows[2]["question"]}
    assert [r["stage"] for r in rejects] == ["generate"] and "poisoned prompt" in rejects[0]["reason"]
