"""Problem variants: arith specs and GSM-Symbolic templates, gold answers recomputed exactly."""

from __future__ import annotations

import json
import re

import pytest

from cluster.problems import arith
from cluster.problems.perturb import PerturbConfig, SymbolicTemplate, instantiate, perturb, symbolic_problems
from cluster.problems.problem import Problem
from tests.shared_data import DATA

TEMPLATES = DATA / "gsm_symbolic" / "templates"

# A template written here in the GSM-Symbolic format (the real ones are used in tests only, not copied).
TOY = {
    "question_annotated": "{name, Ana} buys {n, 3} boxes of {k, 12} eggs and breaks {b, 2}. How many are whole?"
                          "\n\n#init:\n- name = sample(names)\n- $n = range(2, 9)\n- $k = range(6, 25, 6)\n"
                          "- $b = range(1, 5)\n\n#conditions:\n- b < n * k\n- divides(n * k, 3)\n\n"
                          "#answer: n * k - b",
    "answer_annotated": "{name} has {n} * {k} = <<{n}*{k}={n*k}>>{n*k} eggs; {n*k} - {b} = {n*k-b} whole.\n"
                        "#### {n*k-b}",
}


def test_toy_template_instances_satisfy_conditions_and_answer():
    tpl = SymbolicTemplate.parse(TOY, "toy")
    seen = set()
    for seed in range(20):
        p = instantiate(tpl, seed)
        n, k, b = (int(x) for x in re.findall(r"buys (\d+) boxes of (\d+) eggs and breaks (\d+)", p.question)[0])
        assert (n * k) % 3 == 0 and int(p.gold_answer) == n * k - b
        assert p.meta["solution"].endswith(f"#### {n * k - b}")
        seen.add(p.question)
    assert len(seen) > 10
    assert instantiate(tpl, 5) == instantiate(tpl, 5)


def test_arith_variants_change_names_and_numbers_and_recompute_the_answer():
    spec = arith.generate(1, seed=3, mix={4: 1.0})[0]
    p = Problem.make(spec.question, str(spec.answer), "arith", spec.meta())
    variants, rejects = perturb([p], PerturbConfig(n_variants=4, seed=1))
    assert len(variants) == 4 and not rejects
    for v in variants:
        parsed = arith.parse_question(v.question)
        assert parsed is not None and [s.op for s in parsed.steps] == [s.op for s in spec.steps]
        assert v.gold_answer == str(parsed.answer) and v.meta["perturbed_from"] == p.problem_id
        assert v.question != p.question
    assert len({v.question for v in variants}) == 4
    again, _ = perturb([p], PerturbConfig(n_variants=4, seed=1))
    assert [v.question for v in again] == [v.question for v in variants]


def test_unknown_source_is_rejected_with_reason():
    p = Problem.make("What is 2 + 2?", "4", "gsm8k")
    variants, rejects = perturb([p], PerturbConfig())
    assert variants == [] and "no perturber" in rejects[0]["reason"]


@pytest.mark.skipif(not TEMPLATES.exists(), reason="GSM-Symbolic templates not present")
def test_real_gsm_symbolic_templates_mostly_instantiate_consistently():
    problems = symbolic_problems(TEMPLATES / "symbolic")
    assert len(problems) == 100
    variants, rejects = perturb(problems, PerturbConfig(n_variants=1, max_tries=200))
    assert len(variants) + len(rejects) == 100 and len(variants) >= 80
    consistent = [v for v in variants if v.meta["solution"].rsplit("####", 1)[-1].strip() == v.gold_answer]
    assert len(consistent) >= 0.95 * len(variants)  # the template's worked answer agrees with #answer
    first = json.loads((TEMPLATES / "symbolic" / "0000.json").read_text())
    assert problems[0].gold_answer == first["answer"].rsplit("####", 1)[-1].strip()
    assert all(v.question != v.meta.get("question_annotated") for v in variants)
