"""Every bad config, override or run id given to ``tracemill run``: exit 2, one line on stderr, nothing written.

"Nothing written" is checked on the whole tree under the test's folder (data root with one started run, the
config file): every path, size and modification time is the same after the command as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import MAX_NEW_TOKENS, load_config
from storage.runs import start_run

SIM = Path(__file__).resolve().parent.parent / "configs" / "sim.toml"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bad_rows"
runner = CliRunner()


def s(override: str) -> list[str]:
    return ["--set", override]


BAD_CONFIGS: list[tuple[str, list[str], str]] = [  # (case, arguments after `run -c CONFIG`, text of the line)
    ("n is a bool", s("problems.n=true"), "problems.n: Input should be a valid integer (got True)"),
    ("n negative", s("problems.n=-1"), "problems.n"),
    ("n fractional", s("problems.n=2.5"), "problems.n"),
    ("n a word", s("problems.n=ten"), "problems.n"),
    ("n absurd", s("problems.n=100000000000"), "problems.n"),
    ("unknown format", s("problems.format=csv"), "problems.format"),
    ("missing problem file", s("problems.source=/no/such/file.jsonl"), "no such file"),
    ("problem file is a folder", s(f"problems.source={FIXTURES}"), "no such file"),
    ("format matches no row", s(f"problems.source={FIXTURES / 'types.jsonl'}") + s("problems.format=math"),
     "format 'math' matches no row"),
    ("file in no known format", s(f"problems.source={SIM}"), "problems"),
    ("mix step count 13", s("problems.mix={13 = 1.0}"), "problems.mix"),
    ("mix empty", s("problems.mix={}"), "problems.mix"),
    ("mix negative weight", s("problems.mix={2 = -1.0}"), "problems.mix"),
    ("gold_files not a list", s('problems.gold_files="x.jsonl"'), "problems.gold_files"),
    ("missing gold file", s(f"problems.source={FIXTURES / 'processbench.json'}")
     + s('problems.gold_files=["/no/such/gold.jsonl"]'), "no such file"),
    ("seed negative", s("problems.seed=-1"), "problems.seed"),
    ("unknown backend", s("engine.backend=tpu"), "engine.backend"),
    ("no replicas", s("engine.replicas=0"), "engine.replicas"),
    ("replicas a bool", s("engine.replicas=true"), "engine.replicas"),
    ("negative gpus", s("engine.num_gpus=-1"), "engine.num_gpus"),
    ("batch size 0", s("engine.backend=transformers") + s("engine.max_batch_size=0"), "engine.max_batch_size"),
    ("unknown engine key", s("engine.nope=1"), "engine.nope: unknown key"),
    ("non-finite engine option", s("engine.options={latency_s = inf}"),
     "engine.options.latency_s: Input should be a finite number"),
    # each backend's engine.options are its config dataclass's fields (cluster/backends.py); a typo is refused
    ("unknown transformers option", s("engine.backend=transformers") + s('engine.options={devise = "cuda"}'),
     "engine.options.devise: unknown key for backend 'transformers'"),
    ("unknown vllm option", s("engine.backend=vllm") + s("engine.options={gpu_memory_utilisation = 0.5}"),
     "engine.options.gpu_memory_utilisation: unknown key for backend 'vllm'"),
    ("unknown openai option", s("engine.backend=openai")
     + s('engine.options={base_url = "http://127.0.0.1:8000/v1", tokenizer = "t", api_token = "k"}'),
     "engine.options.api_token: unknown key for backend 'openai'"),
    ("unknown sim option", s("engine.options={arith_error = 0.1}"),
     "engine.options.arith_error: unknown key for backend 'sim'"),
    ("option set by an engine key", s("engine.backend=vllm") + s('engine.options={model = "m"}'),
     "engine.options.model: unknown key for backend 'vllm'"),  # engine.model is the one place
    ("model given to the sim", s("engine.model=smollm2-135m-instruct"), "engine.model: unknown key for backend 'sim'"),
    ("batch size given to the sim", s("engine.max_batch_size=8"), "engine.max_batch_size: unknown key for backend 'sim'"),
    ("vllm option out of its bounds", s("engine.backend=vllm") + s("engine.options={gpu_memory_utilization = 1.5}"),
     "engine.options: gpu_memory_utilization must be in (0, 1]"),  # VLLMConfig's own check, before any actor
    ("vllm option of the wrong type", s("engine.backend=vllm") + s("engine.options={max_model_len = 4096.0}"),
     "engine.options.max_model_len: Input should be a valid integer"),
    ("openai without base_url", s("engine.backend=openai") + s('engine.options={tokenizer = "t"}'),
     "engine.options.base_url: Field required"),
    ("plugin name without a callable", s("engine.backend=tests.cluster_fixtures:"), "engine.backend: unknown backend"),
    ("plugin name with a slash", s("engine.backend=tests/cluster_fixtures:flaky_sim"), "engine.backend: unknown backend"),
    ("plugin name with two colons", s("engine.backend=tests.cluster_fixtures:flaky_sim:x"),
     "engine.backend: unknown backend"),
    ("model given to a plugin", s("engine.backend=tests.cluster_fixtures:flaky_sim") + s("engine.model=m"),
     "engine.model: unknown key for a plugin backend"),
    ("no solutions", s("sampling.n_solutions=0"), "sampling.n_solutions"),
    ("max_new_tokens 1e12", s("sampling.max_new_tokens=1e12"), "sampling.max_new_tokens"),  # the issue's
    ("max_new_tokens huge int", s("sampling.max_new_tokens=1000000000000"), str(MAX_NEW_TOKENS)),
    ("max_new_tokens 0", s("sampling.max_new_tokens=0"), "sampling.max_new_tokens"),
    ("max_new_tokens over the engine's context", s("engine.backend=vllm") + s("engine.options={max_model_len = 256}"),
     "below engine.options.max_model_len (256)"),
    ("rollout max_new_tokens huge", s("labeling.options={rollout = {max_new_tokens = 10000000}}"),
     "labeling.options.rollout.max_new_tokens"),
    ("temperature negative", s("sampling.temperature=-1"), "sampling.temperature"),
    ("temperature nan", s("sampling.temperature=nan"), "sampling.temperature"),
    ("top_p 0", s("sampling.top_p=0"), "sampling.top_p"),
    ("top_p above 1", s("sampling.top_p=1.5"), "sampling.top_p"),
    ("empty delimiter", s('sampling.delimiter=""'), "sampling.delimiter"),
    ("few_shot a bool", s("sampling.few_shot=true"), "sampling.few_shot"),
    ("lone surrogate in a prompt", s("sampling.system_prompt=\udcff"), "sampling.system_prompt: not valid UTF-8"),
    ("unknown strategy", s("labeling.strategy=greedy"), "labeling.strategy"),
    ("unknown strategy option", s("labeling.options={kk = 4}"), "labeling.options"),
    ("unknown open_gold", s("labeling.open_gold=oracle"), "labeling.open_gold"),
    ("judge settings without the judge", s("labeling.judge={n = 2, temperature = 0.7}"),
     'labeling: judge is set but open_gold is not "llm-judge"'),
    ("greedy judge asked for votes", s("labeling.open_gold=llm-judge") + s("labeling.judge={n = 4}"),
     "labeling.judge: n > 1 needs temperature > 0"),
    ("judge max_new_tokens over the engine's context", s("labeling.open_gold=llm-judge") + s("engine.backend=vllm")
     + s("engine.options={max_model_len = 2048}") + s("labeling.judge={max_new_tokens = 4096}"),
     "labeling.judge.max_new_tokens: must be an integer from 1, below engine.options.max_model_len (2048)"),
    ("unknown mined kind", s('mining.kinds=["nope"]'), "mining.kinds"),
    ("datasets a word", s("mining.datasets=yes"), "mining.datasets"),
    ("shard size 0", s("storage.shard_size=0"), "storage.shard_size"),
    ("empty data root", s('storage.root=""'), "storage.root"),
    ("negative retries", s("ray.max_retries=-1"), "ray.max_retries"),
    ("run name with a slash", s('name="a/b"'), "name"),
    ("unknown section", s("foo.bar=1"), "foo: unknown key"),
    ("override below a scalar", s("problems.n.x=1"), "n is not a section"),
    ("override without a value", s("novalue"), "--set expects key=value"),
    ("run id with ..", ["--run-id", "../x"], "invalid run id"),
    ("run id with a slash", ["--run-id", "a/b"], "invalid run id"),
    ("empty run id", ["--run-id", ""], "invalid run id"),
    ("run id too long", ["--run-id", "x" * 300], "invalid run id"),
    ("run id with a space", ["--run-id", "a b"], "invalid run id"),
    ("run id with a leading dot", ["--run-id=.hidden"], "invalid run id"),
    ("resume of an unknown run", ["--resume", "nope"], "no run 'nope'"),
    ("resume with a changed config", ["--resume", "r1"] + s("problems.n=3") + s("sampling.seed=7"),
     "differs from the run's in problems.n, sampling.seed"),
    ("resume with the LLM judge instead", ["--resume", "r1"] + s("labeling.open_gold=llm-judge"),
     "differs from the run's in labeling.open_gold"),
    ("an existing id without --resume", ["--run-id", "r1"], "already exists"),
    ("--run-id and --resume disagree", ["--run-id", "r1", "--resume", "r2"], "name different runs"),
]


@pytest.fixture()
def setup(tmp_path) -> tuple[Path, Path]:
    """A config file for a data root that holds one started run, ``r1``, of exactly that config."""
    root = tmp_path / "data"
    config = tmp_path / "sim.toml"
    config.write_text(SIM.read_text().replace('root = "tracemill_data"', f'root = "{root}"'))
    cfg = load_config(config)
    start_run(root, "r1", cfg.model_dump(mode="json"), model="sim", engine="sim")
    return tmp_path, config


def _tree(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("case, args, expected", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_exits_2_with_one_line_and_writes_nothing(setup, case, args, expected):
    folder, config = setup
    before = _tree(folder)
    result = runner.invoke(app, ["run", "-c", str(config), "--no-progress", *args])
    assert result.exit_code == 2, (case, result.output)
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0], (case, result.stderr)
    lines[0].encode("utf-8")
    assert _tree(folder) == before


def test_the_bad_config_table_is_at_least_the_issues_size():
    assert len(BAD_CONFIGS) + 2 >= 33  # + the missing and the unreadable config file below


def test_a_missing_or_unreadable_config_file_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[problems\n")
    before = _tree(tmp_path)
    for path in (tmp_path / "missing.toml", bad):
        result = runner.invoke(app, ["run", "-c", str(path)])
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert _tree(tmp_path) == before
