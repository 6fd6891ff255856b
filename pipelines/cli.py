"""The ``tracemill`` command line. Each command parses its arguments and calls one library function.

Bad command lines and bad configs print one clear line and exit with code 2; nothing is written. A full disk
(or a read-only one where a command must write) prints one line and exits 1; warnings print as one line each.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.config import ConfigError, load_config

app = typer.Typer(
    help="tracemill: search-and-verify data generation for reasoning models.\n\n"
         "Example: tracemill run  (the quickstart: SmolLM2 on CPU, arith problems, linear MC labels)",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML recipe (default: configs/quickstart.toml)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a key: --set sampling.n_solutions=8")]
RootOpt = Annotated[Path, typer.Option("--root", help="data root holding runs/ and catalog.duckdb")]
DEFAULT_ROOT = Path("tracemill_data")


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as one line (lone surrogates from undecodable argv bytes escaped) and exit."""
    message = " ".join(message.encode("utf-8", "backslashreplace").decode("utf-8").split())
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def _one_line_errors() -> None:
    """Runs before every command: warnings and storage faults print as one line on stderr, not a traceback.

    A disk that is full, read-only or not ours to write is no bug of the program: the error (with the notes
    the failing layer added, e.g. "run X is marked failed; free some space ...") prints as one line, exit 1.
    """
    warnings.showwarning = _show_warning
    sys.excepthook = _storage_excepthook


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings API
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _storage_excepthook(kind, err, tb) -> None:  # noqa: ANN001 - sys.excepthook API
    import errno

    from storage.layout import DISK_FULL

    if isinstance(err, OSError) and err.errno in DISK_FULL | {errno.EROFS, errno.EACCES}:
        notes = "; ".join(getattr(err, "__notes__", []))
        err_console.print(f"[red]error:[/red] {err}" + (f"; {notes}" if notes else ""), highlight=False, soft_wrap=True)
        return  # the interpreter exits with 1 after an uncaught exception
    sys.__excepthook__(kind, err, tb)


def parse_overrides(items: list[str] | None) -> dict[str, object]:
    """``key=value`` pairs; values are read as TOML scalars (numbers, booleans, quoted strings)."""
    import tomllib

    out: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None,
        run_id: Annotated[str | None, typer.Option("--run-id", help="name the run (default: generated)")] = None,
        resume: Annotated[str | None, typer.Option("--resume", help="finish run RUN_ID, redoing no committed shard")] = None,
        address: Annotated[str | None, typer.Option("--address", help="join this Ray cluster instead of starting one")] = None,
        no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
        no_report: Annotated[bool, typer.Option("--no-report", help="skip the HTML report")] = False) -> None:
    """Sample solutions, label every step and store the tables.

    Example: tracemill run --config configs/sim.toml --set problems.n=1000
    """
    from pipelines.run import execute
    from pipelines.summary import print_summary

    if resume is not None and run_id is not None and resume != run_id:
        fail(f"--run-id {run_id!r} and --resume {resume!r} name different runs; give one")
    try:
        cfg = load_config(config, parse_overrides(set_))
        summary = execute(cfg, run_id=resume or run_id, resume=resume is not None, progress=not no_progress,
                          ray_address=address, report=not no_report)
    except ConfigError as err:
        fail(str(err))
    print_summary(console, summary)
    _exit_unless_valid(summary)


def _exit_unless_valid(summary) -> None:  # noqa: ANN001 - a pipelines.run.RunSummary (imported lazily)
    """A run whose data breaks an invariant has failed even though it finished: exit 1."""
    if summary.validation is not None and not summary.validation.ok:
        raise typer.Exit(1)


@app.command()
def search(config: Annotated[Path | None, typer.Option("--config", "-c", help="search recipe (default: configs/search_sim.toml)")] = None,
           set_: SetOpt = None,
           run_id: Annotated[str | None, typer.Option("--run-id", help="name the run (default: generated)")] = None,
           resume: Annotated[str | None, typer.Option("--resume", help="finish run RUN_ID, redoing no committed shard")] = None,
           no_report: Annotated[bool, typer.Option("--no-report", help="skip the HTML report")] = False) -> None:
    """Guided search (majority, best-of-N, weighted, beam, DVTS) over a problem set; picks and trees stored.

    Example: tracemill search -c configs/search_sim.toml --set 'search.budgets=[1,2,4,8]'
    """
    from pipelines.search_job import execute_search, load_search_config, print_search_summary

    try:
        cfg = load_search_config(config, parse_overrides(set_))
        summary = execute_search(cfg, run_id=resume or run_id, resume=resume is not None, report=not no_report)
    except ConfigError as err:
        fail(str(err))
    print_search_summary(console, summary)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="SQL over the views runs, problems, solutions, nodes, ...")],
        run: Annotated[str | None, typer.Option("--run", help="restrict every view to this run")] = None,
        fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
        root: RootOpt = DEFAULT_ROOT,
        limit: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
        unsafe: Annotated[bool, typer.Option("--unsafe", help="full DuckDB: COPY, ATTACH, SET, any file")] = False,
        ) -> None:
    """Query the catalog with DuckDB SQL: read-only, files under the root only (--unsafe lifts both).

    Example: tracemill sql "SELECT strategy, avg(value) FROM step_labels GROUP BY 1"
    """
    import duckdb

    from storage.catalog import Catalog, QueryRefused
    from storage.manifest import ManifestError

    if fmt not in ("table", "csv", "json"):
        fail(f"--format must be one of table, csv, json (got {fmt!r})")
    if run is not None:
        _require_run(root, run)
    try:
        with Catalog(root, save=False, restricted=not unsafe) as cat:
            result = cat.sql(query, run_id=run)
    except (QueryRefused, ManifestError) as err:
        fail(str(err))
    except duckdb.Error as err:
        fail(f"query failed: {str(err).splitlines()[0]}")
    print_arrow(result, fmt, limit)


@app.command()
def runs(root: RootOpt = DEFAULT_ROOT,
         fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table") -> None:
    """List runs with status, row counts and wall time.

    Example: tracemill runs
    """
    from storage.catalog import Catalog

    with Catalog(root, save=False) as cat:
        table = cat.runs()
        if fmt == "table":  # the columns that fit a terminal; csv/json give them all
            cat.con.register("_runs", table)
            table = cat.con.sql(
                "SELECT run_id, status, engine, model, strftime(started_at, '%Y-%m-%d %H:%M') AS started, "
                "round(epoch(finished_at) - epoch(started_at), 1) AS wall_s, rows_problems AS problems, "
                "rows_solutions AS solutions, rows_step_labels AS labels, rows_rollouts AS rollouts, "
                "rows_traces AS traces, rows_rejects AS rejects FROM _runs ORDER BY started_at").to_arrow_table()
        print_arrow(table, fmt, 1000)


mine_app = typer.Typer(help="Mine traces from a run's labeled trees.", no_args_is_help=True)
app.add_typer(mine_app, name="mine")


def _mine(kind: str, run_id: str, root: Path, mode: str, strategy: str | None, per_problem: int,
          eval_sets: list[Path] | None) -> None:
    from pipelines.mine import mine_run

    _require_run(root, run_id)
    for path in eval_sets or []:
        if not path.exists():
            fail(f"--decontaminate: file not found: {path}")
    try:
        counts = mine_run(root=root, run_id=run_id, kind=kind, mode=mode, strategy=strategy,
                          max_traces_per_problem=per_problem, eval_sets=tuple(eval_sets or ()))
    except (ValueError, KeyError) as err:
        fail(str(err))
    console.print(counts)


RunArg = Annotated[str, typer.Argument(help="the run to read")]
ModeOpt = Annotated[str, typer.Option(help="verified (every step labeled good) | answer-only")]
StrategyOpt = Annotated[str | None, typer.Option(help="use labels of this strategy (default: all)")]
DecontamOpt = Annotated[list[Path] | None, typer.Option("--decontaminate", help="eval set file(s): drop 13-gram overlaps")]


@mine_app.command("shortest")
def mine_shortest(run_id: RunArg, root: RootOpt = DEFAULT_ROOT, mode: ModeOpt = "verified",
                  strategy: StrategyOpt = None, per_problem: int = 1, decontaminate: DecontamOpt = None) -> None:
    """The fewest-token verified trace per problem.

    Example: tracemill mine shortest quickstart-20261121-101500-ab12cd
    """
    _mine("shortest", run_id, root, mode, strategy, per_problem, decontaminate)


@mine_app.command("backtrack")
def mine_backtrack(run_id: RunArg, root: RootOpt = DEFAULT_ROOT,
                   journey: Annotated[bool, typer.Option(help="several detours per trace")] = False,
                   strategy: StrategyOpt = None, per_problem: int = 1, decontaminate: DecontamOpt = None) -> None:
    """Traces with a wrong step, the verifier's feedback and a return to the last good step.

    Example: tracemill mine backtrack RUN_ID --journey
    """
    _mine("journey" if journey else "backtrack", run_id, root, "verified", strategy, per_problem, decontaminate)


@app.command("export")
def export_cmd(run_id: RunArg,
               fmt: Annotated[str, typer.Option("--format", help="hf (prm + sft + grpo) | trl-prm | trl-sft | grpo | jsonl")] = "hf",
               out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("export"),
               root: RootOpt = DEFAULT_ROOT,
               labels: Annotated[str, typer.Option(help="hard | soft PRM labels")] = "hard",
               math_shepherd: Annotated[bool, typer.Option(help="also the Math-Shepherd tagged PRM dataset")] = False,
               style: Annotated[str, typer.Option(help="SFT: conversational | recovery | messages | prompt-completion")] = "conversational",
               test_fraction: Annotated[float, typer.Option(help="share of problems held out as the test split")] = 0.0,
               seed: Annotated[int, typer.Option(help="seed of the train/test split")] = 0,
               after_error: Annotated[str | None, typer.Option(help="PRM steps after the first error: cut | mask (default: the run's)")] = None) -> None:
    """Write datasets trainers load unchanged, with a dataset card: load_dataset(OUT, "prm" | "sft" | "grpo").

    Example: tracemill export RUN_ID --out data/run1 --test-fraction 0.1
    """
    from pipelines.export import ExportOptions, export
    from search.traces.formats import SFT_STYLES

    if labels not in ("hard", "soft"):
        fail(f"--labels must be hard or soft (got {labels!r})")
    if style not in SFT_STYLES:
        fail(f"--style must be one of {', '.join(SFT_STYLES)} (got {style!r})")
    if after_error not in (None, "cut", "mask"):
        fail(f"--after-error must be cut or mask (got {after_error!r})")
    try:
        opts = ExportOptions(label_kind=labels, sft_style=style, math_shepherd=math_shepherd,
                             test_fraction=test_fraction, seed=seed, after_error=after_error)
        _require_run(root, run_id)
        paths = export(fmt, out, root=root, run_id=run_id, options=opts)
    except ValueError as err:
        fail(str(err))
    for path in paths:
        console.print(str(path))


@app.command()
def validate(run_id: RunArg, root: RootOpt = DEFAULT_ROOT) -> None:
    """Check the invariants a user trains on; exit 1 naming each violation.

    Each problem once; solution paths exist; no label contradicts its own rollouts (unless its label_source
    says it was overridden); every labeled first error has a PRM negative (or a filtered row); no duplicate
    ids; every SFT trace reaches the gold answer.

    Example: tracemill validate sim-20261121-101500-ab12cd
    """
    from pipelines.summary import print_validation
    from pipelines.validate import validate_run

    _require_run(root, run_id)
    result = validate_run(root, run_id)
    print_validation(console, result)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def perturb(out_run: Annotated[str, typer.Argument(help="id of the new run holding the variants")],
            run_id: Annotated[str | None, typer.Option("--from-run", help="perturb this run's problems")] = None,
            templates: Annotated[Path | None, typer.Option(help="folder of GSM-Symbolic-format templates")] = None,
            variants: int = 4, seed: int = 0, root: RootOpt = DEFAULT_ROOT) -> None:
    """Variants of problems with other names and numbers and recomputed gold answers (memorization probe).

    Example: tracemill perturb probe-1 --from-run RUN_ID --variants 4
    """
    from pipelines.perturb import perturb_run

    if run_id is None and templates is None:
        fail("give --from-run RUN_ID and/or --templates DIR")
    if templates is not None and not templates.is_dir():
        fail(f"--templates: not a folder: {templates}")
    try:
        counts = perturb_run(out_run, root=root, run_id=run_id, templates=templates, n_variants=variants, seed=seed)
    except (ValueError, KeyError) as err:
        fail(str(err))
    console.print(counts)


eval_app = typer.Typer(help="Score labels and verifiers against ground truth.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("labels")
def eval_labels(run_id: RunArg, root: RootOpt = DEFAULT_ROOT,
                fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table") -> None:
    """First-error F1, step accuracy and rollout cost of every strategy in a run with ground truth (sim engine).

    Example: tracemill eval labels sim-20261121-101500-ab12cd
    """
    from pipelines.evaluate.labels import label_quality

    _require_run(root, run_id)
    try:
        result = label_quality(root, run_id)
    except ValueError as err:
        fail(str(err))
    if fmt == "json":
        print(json.dumps(result, default=str))
        return
    strategies = list(result)
    out = Table(title=f"label quality of {run_id}")
    out.add_column("metric")
    for name in strategies:
        out.add_column(name, justify="right")
    for metric in result[strategies[0]]:
        out.add_row(metric, *(_cell(result[name][metric]) for name in strategies))
    console.print(out)


@eval_app.command("processbench")
def eval_processbench_cmd(
        verifier: Annotated[str, typer.Option(help="arith | mc | consensus | prm:PATH")] = "arith",
        run: Annotated[str | None, typer.Option("--run", help="mc/consensus: predictions from this label run")] = None,
        predictions: Annotated[Path | None, typer.Option(help="mc/consensus: JSONL {id, subset, predicted}")] = None,
        data_dir: Annotated[Path | None, typer.Option(help="ProcessBench folder (gsm8k.json, math.json, ...)")] = None,
        policy: Annotated[str, typer.Option(help="consensus: keep | flag | drop | strict")] = "strict",
        limit: Annotated[int, typer.Option(help="rows per subset (0 = all)")] = 0,
        out: Annotated[Path, typer.Option(help="writes predictions.jsonl and results.json here")] = Path("eval_processbench"),
        root: RootOpt = DEFAULT_ROOT) -> None:
    """Per-subset first-error F1 on ProcessBench (PRM threshold chosen on the GSM8K subset).

    Example: tracemill eval processbench --verifier arith --data-dir ../shared/data/processbench
    """
    from pipelines.evaluate.processbench import (
        DEFAULT_DATA,
        EvalOptions,
        eval_processbench,
        predictions_from_run,
    )

    data = data_dir or DEFAULT_DATA
    if not data.is_dir():
        fail(f"--data-dir: not a folder: {data}")
    try:
        if run is not None:
            _require_run(root, run)
            predictions = predictions_from_run(root, run, out / "mc_predictions.jsonl")
        eval_processbench(verifier, out, EvalOptions(data_dir=data, predictions=predictions, policy=policy,
                                                     limit=limit), console)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))


@app.command("train-prm")
def train_prm_cmd(data: Annotated[Path, typer.Argument(help="an export folder, its prm/ folder, or PRM rows (Parquet/JSONL)")],
                  out: Annotated[Path, typer.Argument(help="folder for the trained verifier")],
                  config: Annotated[Path | None, typer.Option("--config", "-c", help="e.g. configs/prm_demo.toml")] = None,
                  set_: SetOpt = None, limit: int = 0) -> None:
    """Train a process verifier: a score head read at each step's last token.

    Example: tracemill export RUN --out data/run1 --test-fraction 0.1 && tracemill train-prm data/run1 prm_model -c configs/prm_demo.toml
    """
    from pipelines.train_prm import train_prm

    for path in [data] + ([config] if config else []):
        if not path.exists():
            fail(f"file not found: {path}")
    try:
        report = train_prm(data, out, config, parse_overrides(set_), limit)
    except (ValueError, TypeError) as err:
        fail(str(err))
    held_out = ""
    if report.eval_metrics:
        before, after = report.eval_before, report.eval_metrics
        held_out = (f"; held-out loss {before['eval_loss']:.4f} -> {after['eval_loss']:.4f}, step AUC {after['eval_auc']:.3f} "
                    f"({report.n_eval_examples} solutions)")
    console.print(f"trained on {report.n_examples} solutions ({report.n_steps} steps); loss by epoch: "
                  + ", ".join(f"{x:.4f}" for x in report.epoch_losses) + held_out + f"; saved to {out}")


@app.command()
def score(model_dir: Annotated[Path, typer.Argument(help="a folder written by train-prm")],
          data: Annotated[Path, typer.Argument(help="PRM rows or ProcessBench-style rows to score")],
          out: Annotated[Path, typer.Argument(help="output Parquet file of per-step scores")],
          limit: int = 0) -> None:
    """Write PRM scores per step.

    Example: tracemill score prm_model prm/prm.parquet scores.parquet
    """
    from pipelines.score import score_file

    for path in (model_dir, data):
        if not path.exists():
            fail(f"file not found: {path}")
    table = score_file(model_dir, data, out, limit)
    console.print(f"{table.num_rows} step scores written to {out}")


@app.command()
def label(config: ConfigOpt = None, set_: SetOpt = None,
          strategy: Annotated[str | None, typer.Option("--strategy", help="linear | binary | adaptive | mcts")] = None,
          solutions: Annotated[Path | None, typer.Option("--solutions", help="label given solutions (ProcessBench format)")] = None,
          run_id: Annotated[str | None, typer.Option("--run-id")] = None,
          no_progress: Annotated[bool, typer.Option("--no-progress")] = False) -> None:
    """Label steps with a chosen strategy: of freshly sampled solutions, or of given ones (--solutions).

    Example: tracemill label --strategy binary --solutions processbench/gsm8k.json --set problems.n=20
    """
    from pipelines.run import execute
    from pipelines.summary import print_summary

    overrides = parse_overrides(set_)
    if strategy:
        overrides["labeling.strategy"] = strategy
    if solutions is not None:
        overrides.update({"problems.source": str(solutions), "problems.format": "processbench"})
    try:
        cfg = load_config(config, overrides)
        summary = execute(cfg, run_id=run_id, progress=not no_progress)
    except ConfigError as err:
        fail(str(err))
    print_summary(console, summary)
    _exit_unless_valid(summary)


@app.command()
def report(run_id: RunArg, root: RootOpt = DEFAULT_ROOT,
           out: Annotated[Path | None, typer.Option("--out", help="default: <root>/runs/<run_id>/report.html")] = None) -> None:
    """Write a self-contained HTML report: plots and a search-tree viewer.

    Example: tracemill report quickstart-20261121-101500-ab12cd
    """
    import os

    from pipelines.report import write_report
    from storage.layout import RunPaths

    _require_run(root, run_id)
    if out is None and not os.access(RunPaths(root, run_id).run_dir, os.W_OK):
        fail(f"{RunPaths(root, run_id).run_dir} is not writable; write the report elsewhere with --out FILE", 1)
    try:
        console.print(f"report: {write_report(root, run_id, out)}")
    except FileNotFoundError as err:
        fail(str(err))


AddressOpt = Annotated[str, typer.Option("--address", help="Ray dashboard address, e.g. http://HEAD:8265")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="RAY_AUTH_TOKEN", show_envvar=True,
    help="the cluster's Ray auth token (default: RAY_AUTH_TOKEN; with RAY_AUTH_MODE=token, Ray's token file)")]


@app.command()
def submit(config: Annotated[Path, typer.Argument(help="TOML recipe to run on the cluster")],
           address: AddressOpt = "http://127.0.0.1:8265",
           run_id: Annotated[str | None, typer.Option("--run-id", help="default: generated from the config name")] = None,
           working_dir: Annotated[Path, typer.Option(help="shipped to the cluster")] = Path("."),
           token: TokenOpt = None,
           python: Annotated[str | None, typer.Option(
               "--python", help="interpreter on the head that has tracemill installed (default: this one)")] = None,
           ) -> None:
    """Submit a run as a Ray job; the run id is the submission id, so a run is never submitted twice.

    Example: tracemill submit --address http://10.0.0.1:8265 --token "$(cat ~/.ray/auth_token)" configs/sim.toml
    """
    from pipelines.build import new_run_id
    from pipelines.submit import AlreadySubmitted
    from pipelines.submit import submit as submit_job

    try:
        cfg = load_config(config)
        rid = run_id or new_run_id(cfg)
        console.print(f"submitted {submit_job(address, str(config), rid, str(working_dir), token, python)}")
    except ConfigError as err:
        fail(str(err))
    except AlreadySubmitted as err:
        fail(str(err))


@app.command()
def status(run_id: RunArg, address: AddressOpt = "http://127.0.0.1:8265", token: TokenOpt = None) -> None:
    """The Ray job status of a submitted run.

    Example: tracemill status sim-20261121-101500-ab12cd
    """
    from pipelines.submit import status as job_status

    try:
        console.print(job_status(address, run_id, token))
    except KeyError as err:
        fail(f"no job {run_id!r} at {address}: {err}")


@app.command()
def logs(run_id: RunArg, address: AddressOpt = "http://127.0.0.1:8265",
         follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends")] = False,
         token: TokenOpt = None) -> None:
    """The driver log of a submitted run.

    Example: tracemill logs sim-20261121-101500-ab12cd --follow
    """
    from pipelines.submit import logs as job_logs

    try:
        for chunk in job_logs(address, run_id, follow=follow, token=token):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyError as err:
        fail(f"no job {run_id!r} at {address}: {err}")


def _require_run(root: Path, run_id: str) -> None:
    """Exit 2 with one line, before anything is written, when ``run_id`` is not a run under ``root``;
    exit 1 with one line when its manifest is damaged (the other runs on the root are unaffected)."""
    from storage.layout import RunPaths
    from storage.manifest import Manifest, ManifestError
    from storage.runs import UnknownRunError, require_run

    try:
        require_run(root, run_id)
    except UnknownRunError as err:
        fail(str(err))
    try:
        Manifest.load(RunPaths(root, run_id))
    except ManifestError as err:
        fail(str(err), 1)


def print_arrow(table, fmt: str, limit: int) -> None:  # noqa: ANN001 - a pyarrow Table
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
        return
    if fmt == "json":
        for row in table.to_pylist():
            print(json.dumps(row, default=str))
        return
    out = Table(show_lines=False)
    for name in table.column_names:
        out.add_column(name, overflow="fold")
    for row in table.slice(0, limit).to_pylist():
        out.add_row(*[_cell(v) for v in row.values()])
    console.print(out)
    if table.num_rows > limit:
        console.print(f"({table.num_rows} rows, {limit} shown)")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def main() -> None:
    app()


if __name__ == "__main__":
    main()
