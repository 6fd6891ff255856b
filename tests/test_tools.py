"""The python tool without Ray: the text format, stated-result comparison, step splitting, chat turns, the
generation loop on the sim engine (real sandbox calls), and labels that follow the tool's evidence."""

from __future__ import annotations

import pytest

from cluster import sim_code
from cluster.engine import GenRequest
from cluster.problems import arith
from cluster.problems.loaders import load_arith
from cluster.problems.problem import Problem
from cluster.problems.steps import split_steps
from cluster.sim_engine import SimConfig, SimEngine
from search.labeling import STRATEGIES
from search.program import run_program
from search.sampling import SamplingConfig, sample_solutions
from search.tool_loop import ExecRequest, execute, generate_with_tools, with_tools
from search.tools import (
    ToolConfig,
    agrees,
    assign_calls,
    observation,
    output_text,
    split_tool_steps,
    stated_result,
    tool_error,
    tool_turns,
    trailing_code,
)
from search.traces.formats import SftConfig, to_trl_sft
from search.tree import ToolCall
from verifier.answers import judge

STEP = "She buys 7 more:\n```python\ntotal = 24\nprint(total + 7)\n```\n```output\n31\n```\nSo 24 + 7 = {c}."
TOOLS = ToolConfig(python=True)


@pytest.mark.parametrize(("text", "code"), [
    ("x\n```python\nprint(1)\n```\n", "print(1)\n"),
    ("x\n```python\nprint(1)\n```", "print(1)\n"),  # ended (eos) right after the fence
    ("x\n```\nplain\n```\n", None),  # not a python block
    ("```python\na = 1\n```\n```output\n1\n```\n", None),  # already answered
    ("x ```python\nprint(1)\n", None),  # not closed
])
def test_trailing_code_is_the_python_block_a_text_ends_with(text, code):
    assert trailing_code(text) == code


@pytest.mark.parametrize(("statement", "expected"), [
    ("So 24 + 7 = 31.", "31"), ("so x is 42", "42"), ("The result equals -3.5 here", "-3.5"),
    ("giving \\boxed{1,200}", "1,200"), ("Nice, that worked.", None), ("It has 3 apples", None),
])
def test_stated_result_is_the_number_claimed_after_the_output(statement, expected):
    step = "Compute:\n```python\nprint(31)\n```\n```output\n31\n```\n" + statement
    assert stated_result(step) == expected
    assert stated_result("So x = 5.") is None  # no output block: nothing to compare with


@pytest.mark.parametrize(("stated", "output", "ok"), [
    ("31", "31", True), ("31", "31.0", True), ("32", "31", False), ("3.14", "3.14159", True),
    ("3.15", "3.14159", False), ("1,200", "1200", True), ("3/4", "0.75", True), ("5", "a=3\nb=5", True),
    ("7", "a=3\nb=5", False), ("7", "done", True),  # an output without numbers is not judged
])
def test_a_stated_number_agrees_when_some_printed_number_matches_it(stated, output, ok):
    assert agrees(stated, output) is ok


def test_tool_error_names_a_failed_call_or_a_disagreement_and_passes_an_agreeing_step():
    ok = ToolCall("total = 24\nprint(total + 7)\n", "31", "ok")
    assert tool_error(STEP.format(c=31), ok) is None
    assert tool_error(STEP.format(c=32), ok) == "stated 32, output '31'"
    assert tool_error(STEP.format(c=31), ToolCall("x", "NameError: x", "error")) == "tool failed: error"
    assert tool_error(STEP.format(c=32), None) is None  # no call: nothing for the tool to say


def test_split_keeps_a_call_with_its_output_and_statement_and_never_cuts_inside_a_fence():
    code = "```python\na = 1\n\nb = 2\nprint(a + b)\n```\n"  # a blank line inside the code
    out = "```output\n3\n```\n"
    text = "First.\n\nAdd them:\n" + code + out + "\n\nSo a + b = 3.\n\nThen:\n```python\nprint(4)\n```\n" \
        "```output\n4\n```\nIt is 4.\n```python\nprint(5)\n```\n```output\n5\n```\nIt is 5.\n\nThe answer is 5."
    steps = split_tool_steps(text, "\n\n")
    assert "".join(steps) == text
    assert steps[0] == "First.\n\n"
    assert steps[1] == "Add them:\n" + code + out + "\n\nSo a + b = 3.\n\n"  # the blank line after the output too
    assert steps[2].startswith("Then:") and steps[2].count("```python") == 1
    assert steps[3].startswith("```python\nprint(5)") and steps[4] == "The answer is 5."
    assert len(split_steps(text, "\n\n")) > len(steps)  # the plain split would cut the code block


def test_assign_calls_puts_each_call_on_the_step_holding_its_output():
    steps = ["a\n\n", STEP.format(c=31) + "\n\n", "The answer is 31."]
    text = "".join(steps)
    call = ToolCall("c", "31", "ok")
    end = text.index("```\nSo") + len("```\n")
    assert assign_calls(steps, [(end, call)]) == [None, call, None]


def test_output_text_shows_stdout_or_the_error_line_and_never_a_fence():
    assert output_text("ok", "31\n", "", 100) == "31"
    assert output_text("error", "", "Traceback ...\n  File x\nNameError: name 'y' is not defined\n", 100) == \
        "NameError: name 'y' is not defined"
    assert output_text("timeout", "partial\n", "", 100) == "partial\nsandbox: timeout"
    assert output_text("ok", "```\nx", "", 100) == "'''\nx"
    assert output_text("ok", "x" * 50, "", 10).endswith("[truncated]")
    assert observation(ToolCall("c", "", "ok"), "```") == "\n```output\n```\n"  # no blank line even when empty


def test_tool_turns_split_a_text_into_assistant_code_and_tool_output_messages():
    text = "a\n\n" + STEP.format(c=31) + "\n\nThe answer is 31."
    turns = tool_turns(text)
    assert [t["role"] for t in turns] == ["assistant", "tool", "assistant"]
    assert turns[0]["content"].endswith("print(total + 7)\n```") and turns[1]["content"] == "31"
    assert turns[2]["content"] == "So 24 + 7 = 31.\n\nThe answer is 31."
    assert tool_turns("no code here") == [{"role": "assistant", "content": "no code here"}]


def test_sandbox_calls_report_output_and_failures():
    assert execute(ExecRequest("k", "print(6 * 7)\n"), TOOLS) == ToolCall("print(6 * 7)\n", "42", "ok")
    crash = execute(ExecRequest("k", "print(totl)\n"), TOOLS)
    assert crash.verdict == "error" and "NameError" in crash.output


def _sim(**rates) -> SimEngine:
    return SimEngine(SimConfig(code_rate=0.8, code_error_rate=0.2, misstate_rate=0.2, **rates))


def _problems(n: int, seed: int = 0) -> list[Problem]:
    return load_arith(n, seed, {3: 0.5, 4: 0.5})


def test_the_loop_runs_every_python_block_and_the_sim_states_what_it_printed():
    eng = _sim()
    specs = arith.generate(20, 1, {4: 1.0})
    calls = 0
    for spec in specs:
        prompt = eng.apply_chat_template([{"role": "user", "content": spec.question}])
        req = GenRequest(spec.question[:16], prompt, n=2, max_new_tokens=400, seed=3)
        for s in run_program(generate_with_tools(req, TOOLS), with_tools(eng.generate, TOOLS)):
            assert s.text.count("```python") == s.text.count("```output") == len(s.calls)  # every block ran
            calls += len(s.calls)
            steps = split_tool_steps(s.text, "\n\n")
            for step, call in zip(steps, assign_calls(steps, s.calls), strict=True):
                if call is None:
                    continue
                parsed = sim_code.parse_code(step)
                assert parsed is not None and (call.verdict == "ok") is (not parsed[3])  # crashes are the typos
                assert (tool_error(step, call) is None) is sim_code.supported(step)  # tool evidence == truth
    assert calls > 40


def test_continuation_is_deterministic_and_keeps_prompt_and_group():
    eng = _sim()
    seen: list[GenRequest] = []

    def generate(reqs):
        seen.extend(r for r in reqs if isinstance(r, GenRequest))
        return eng.generate(reqs)

    spec = arith.generate(1, 4, {4: 1.0})[0]
    prompt = eng.apply_chat_template([{"role": "user", "content": spec.question}])
    req = GenRequest("key", prompt, n=3, max_new_tokens=400, seed=9, group="p")
    first = run_program(generate_with_tools(req, TOOLS), with_tools(generate, TOOLS))
    again = run_program(generate_with_tools(req, TOOLS), with_tools(eng.generate, TOOLS))
    assert [s.text for s in first] == [s.text for s in again]
    assert len(seen) > 1 and all(r.prompt == prompt and r.group == "p" and "```\n" in r.stop for r in seen)
    assert all(r.n == 1 and r.prefix for r in seen[1:])  # one continuation per sample, after its output


def test_the_call_cap_ends_a_sample_as_cut_off():
    eng = SimEngine(SimConfig(code_rate=1.0, code_error_rate=0.0, misstate_rate=0.0))
    spec = arith.generate(1, 2, {5: 1.0})[0]
    prompt = eng.apply_chat_template([{"role": "user", "content": spec.question}])
    cfg = ToolConfig(python=True, max_calls=2)
    (s,) = run_program(generate_with_tools(GenRequest("k", prompt, n=1, max_new_tokens=400), cfg),
                       with_tools(eng.generate, cfg))
    assert len(s.calls) == 2 and s.finish_reason == "length"


@pytest.mark.parametrize("strategy", ["linear", "binary", "adaptive"])
def test_tool_refuted_steps_are_bad_with_no_rollouts_and_match_the_truth(strategy):
    eng = _sim()
    scfg = SamplingConfig(n_solutions=4, max_new_tokens=400, tools=TOOLS)
    gen = with_tools(eng.generate, TOOLS)
    lcfg = STRATEGIES[strategy].config.from_dict({"k": 2, "rollout": {"tools": {"python": True}}}
                                                if strategy != "adaptive" else {"rollout": {"tools": {"python": True}}})
    flagged = truly_bad = 0
    for problem in _problems(12):
        prompt = eng.apply_chat_template([{"role": "user", "content": problem.question}])
        sampled = run_program(sample_solutions(problem, prompt, scfg, judge), gen)
        paths = [s.path for s in sampled.solutions]
        result = run_program(STRATEGIES[strategy].label(sampled.tree, paths, problem, prompt, lcfg, judge), gen)
        for path in paths:
            for node in path:
                unsupported = not sim_code.supported(node.text)
                truly_bad += unsupported
                lab = result.labels.get(node.node_id)
                if lab is not None and lab.label_source == "tool":
                    flagged += 1
                    assert unsupported and not lab.hard and lab.n == 0 and not node.rollouts
                elif unsupported:  # every refuted step on a path is labeled by the tool where it is labeled
                    assert lab is None  # (the binary searches leave steps after the first error unlabeled)
    assert flagged > 5 and truly_bad >= flagged


def test_sft_rows_of_a_tool_run_hold_tool_messages_and_recovery_cuts_at_turns():
    import pyarrow as pa

    from search.traces.formats import sft_table

    wrong = STEP.format(c=32) + "\n\n"
    good = STEP.format(c=31) + "\n\nThe answer is 31."
    reflection = "Wait, step 1 is wrong.\n\n"
    text = wrong + reflection + good
    traces = pa.Table.from_pylist([{"trace_id": "t", "problem_id": "p", "kind": "backtrack", "text": text,
                                    "wrong_char_starts": [0], "wrong_char_ends": [len(wrong)]}])
    table = sft_table(traces, {"p": "Q?"}, SftConfig(tools=True), "r")
    (row,) = table.to_pylist()
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert row["completion"] == text.rstrip()
    (conv,) = to_trl_sft(table, "conversational")
    assert [m["role"] for m in conv["completion"]] == ["assistant", "tool", "assistant", "tool", "assistant"]
    (rec,) = to_trl_sft(table, "recovery")
    assert [m["role"] for m in rec["prompt"]] == ["user", "assistant", "tool", "assistant"]
    assert rec["prompt"][-1]["content"] == "So 24 + 7 = 32.\n\n"  # the wrong step's statement, read not trained
    assert rec["completion"][0]["content"].startswith("Wait, step 1")
    (plain,) = sft_table(traces, {"p": "Q?"}, SftConfig(), "r").to_pylist()
    assert [m["role"] for m in plain["messages"]] == ["user", "assistant"]  # a run without tools: one message
