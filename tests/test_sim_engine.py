"""The sim engine: deterministic, continues any prefix, and its mistakes match the exact ground truth."""

from __future__ import annotations

import re

import pytest

from cluster.backends import build_engine
from cluster.engine import Engine, GenRequest
from cluster.problems.arith import first_error, generate, parse_step
from cluster.problems.steps import step_texts
from cluster.sim_engine import SimConfig, SimEngine
from tests.engine_contract import check_engine_contract

DELIM = "\n\n"
NO_ERRORS = SimConfig(arith_error_rate=0.0, logic_error_rate=0.0)
MIX = {k: 1.0 for k in range(2, 9)}


def _prompt(engine: SimEngine, question: str) -> str:
    return engine.apply_chat_template([{"role": "user", "content": question}])


def _samples(engine: SimEngine, question: str, n: int = 4, **kw) -> list:
    req = GenRequest("k", _prompt(engine, question), n=n, **{"max_new_tokens": 1000, "seed": 1, **kw})
    [result] = engine.generate([req])
    return result.samples


def _answer(text: str) -> int | None:
    steps = step_texts(text, DELIM)
    last = parse_step(steps[-1]) if steps else None
    return last if isinstance(last, int) else None


def test_implements_the_engine_protocol_and_the_backend_registry_builds_it():
    engine = build_engine("sim", {"arith_error_rate": 0.0, "seed": 3})
    assert isinstance(engine, SimEngine) and isinstance(engine, Engine)
    assert engine.config.seed == 3


def test_same_request_same_text_and_different_seeds_differ():
    engine = SimEngine(SimConfig(arith_error_rate=0.3))
    spec = generate(1, seed=0, mix={6: 1.0})[0]
    first = [s.text for s in _samples(engine, spec.question, n=6)]
    assert first == [s.text for s in SimEngine(SimConfig(arith_error_rate=0.3))
                     .generate([GenRequest("k", _prompt(engine, spec.question), n=6, max_new_tokens=1000,
                                           seed=1)])[0].samples]
    assert len(set(first)) > 1  # sample i uses seed + i
    assert first != [s.text for s in _samples(engine, spec.question, n=6, seed=99)]
    other_policy = SimEngine(SimConfig(arith_error_rate=0.3, seed=1))
    assert first != [s.text for s in _samples(other_policy, spec.question, n=6)]


def test_zero_error_rates_always_reach_the_gold_answer_with_every_step_right():
    engine = SimEngine(NO_ERRORS)
    for spec in generate(40, seed=2, mix={k: 1.0 for k in range(1, 13)}):
        for sample in _samples(engine, spec.question):
            assert sample.finish_reason == "eos"
            assert first_error(spec.question, sample.text) == -1
            assert _answer(sample.text) == spec.answer
            assert len(step_texts(sample.text, DELIM)) == len(spec.steps) + 1


@pytest.mark.parametrize("step", [0, 1, 3])
def test_planted_error_is_the_exact_first_error(step):
    engine = SimEngine(SimConfig(arith_error_rate=0.0, logic_error_rate=0.0, recovery_rate=0.0,
                                 force_error_at=step))
    for spec in generate(20, seed=4, mix={5: 1.0}):
        for sample in _samples(engine, spec.question):
            assert first_error(spec.question, sample.text) == step


def test_errors_propagate_from_the_wrong_value():
    engine = SimEngine(SimConfig(arith_error_rate=0.0, logic_error_rate=0.0, recovery_rate=0.0,
                                 force_error_at=0))
    spec = generate(1, seed=5, mix={4: 1.0})[0]
    steps = step_texts(_samples(engine, spec.question, n=1)[0].text, DELIM)
    eqs = [parse_step(s) for s in steps[:-1]]
    for prev, cur in zip(eqs, eqs[1:], strict=False):
        assert cur[0] == prev[3]  # each step starts from the value the previous one wrote
    assert parse_step(steps[-1]) == eqs[-1][3]


def _step_right(step: str, truth: int) -> bool:
    """An independent check: the equation's text evaluates (true division) to its result, which is ``truth``."""
    lhs, _, rhs = step.rpartition(" = ")
    expr = " ".join(lhs.split()[-3:])  # "a op b"
    return eval(expr) == int(rhs.rstrip(".")) == truth  # safe: two integers and one operator


def test_first_error_agrees_with_an_independent_check_on_random_samples():
    engine = SimEngine(SimConfig(arith_error_rate=0.15, logic_error_rate=0.1, recovery_rate=0.3))
    seen = set()
    for spec in generate(30, seed=6, mix=MIX):
        chain = spec.chain
        for sample in _samples(engine, spec.question, n=6):
            steps = step_texts(sample.text, DELIM)
            right = [_step_right(s, chain[i + 1]) for i, s in enumerate(steps[:-1])]
            right.append(steps[-1] == f"The answer is {spec.answer}.")
            got = first_error(spec.question, sample.text)
            assert got == (right.index(False) if False in right else -1)
            seen.add(got)
    assert -1 in seen and len(seen) > 3


def test_recovery_lands_a_wrong_solution_back_on_the_gold_answer():
    engine = SimEngine(SimConfig(arith_error_rate=0.0, logic_error_rate=0.0, recovery_rate=1.0,
                                 force_error_at=1))
    for spec in generate(10, seed=7, mix={4: 1.0}):
        for sample in _samples(engine, spec.question):
            assert first_error(spec.question, sample.text) == 1
            assert _answer(sample.text) == spec.answer  # false positive for an outcome-only check


def test_recovery_happens_by_chance_at_default_style_rates():
    engine = SimEngine(SimConfig(arith_error_rate=0.2, logic_error_rate=0.1, recovery_rate=0.3))
    recovered = 0
    for spec in generate(40, seed=8, mix=MIX):
        for sample in _samples(engine, spec.question, n=8):
            recovered += first_error(spec.question, sample.text) >= 0 and _answer(sample.text) == spec.answer
    assert recovered > 0


def test_continuation_from_a_step_prefix_equals_generating_in_one_go():
    engine = SimEngine(SimConfig(arith_error_rate=0.3))
    spec = generate(1, seed=9, mix={6: 1.0})[0]
    prompt = _prompt(engine, spec.question)
    [whole] = engine.generate([GenRequest("w", prompt, n=1, max_new_tokens=1000, seed=5)])[0].samples
    steps = step_texts(whole.text, DELIM)
    for cut in range(len(steps)):
        prefix = DELIM.join(steps[:cut]) + (DELIM if cut else "")
        [cont] = engine.generate([GenRequest("c", prompt, prefix, max_new_tokens=1000, seed=5)])[0].samples
        assert prefix + cont.text == whole.text


def test_continuation_mid_step_finishes_that_step():
    engine = SimEngine(SimConfig(arith_error_rate=0.3))
    spec = generate(1, seed=10, mix={3: 1.0})[0]
    prompt = _prompt(engine, spec.question)
    [whole] = engine.generate([GenRequest("w", prompt, max_new_tokens=1000, seed=2)])[0].samples
    for cut in (5, len(whole.text) // 2, len(whole.text) - 3):
        [cont] = engine.generate([GenRequest("c", prompt, whole.text[:cut], max_new_tokens=1000,
                                             seed=2)])[0].samples
        assert whole.text[:cut] + cont.text == whole.text


def test_continuation_computes_from_a_planted_wrong_value():
    engine = SimEngine(SimConfig(arith_error_rate=0.0, logic_error_rate=0.0, recovery_rate=0.0))
    q = "Mia has 48 marbles. She gives half of them to her brother. Then she buys 7 more. " \
        "How many marbles does Mia have now?"
    prefix = "She gives half of 48 to her brother: 48 / 2 = 20." + DELIM
    [cont] = engine.generate([GenRequest("c", _prompt(engine, q), prefix, max_new_tokens=100)])[0].samples
    assert parse_step(step_texts(cont.text, DELIM)[0])[:3] == (20, "+", 7)
    assert cont.text.endswith("The answer is 27.")
    assert first_error(q, prefix + cont.text) == 0


def test_foreign_partial_step_is_closed_and_continued():
    engine = SimEngine(NO_ERRORS)
    spec = generate(1, seed=11, mix={3: 1.0})[0]
    [cont] = engine.generate([GenRequest("c", _prompt(engine, spec.question), "Let me think", seed=0)])[0].samples
    assert cont.text.startswith(DELIM)
    assert len(step_texts(cont.text, DELIM)) == len(spec.steps)  # "Let me think" took step 0's slot


def test_finished_prefix_gives_an_empty_eos_continuation():
    engine = SimEngine(NO_ERRORS)
    spec = generate(1, seed=12, mix={2: 1.0})[0]
    whole = _samples(engine, spec.question, n=1)[0].text
    [cont] = engine.generate([GenRequest("c", _prompt(engine, spec.question), whole)])[0].samples
    assert (cont.text, cont.finish_reason, cont.token_ids) == ("", "eos", [])


def test_stop_at_the_delimiter_gives_one_step_at_a_time_keeping_the_stop():
    engine = SimEngine(SimConfig(arith_error_rate=0.2))
    spec = generate(1, seed=13, mix={4: 1.0})[0]
    prompt, prefix = _prompt(engine, spec.question), ""
    for _ in range(len(spec.steps)):
        [s] = engine.generate([GenRequest("c", prompt, prefix, stop=(DELIM,), seed=3)])[0].samples
        assert s.finish_reason == "stop" and s.text.endswith(DELIM) and len(step_texts(s.text, DELIM)) == 1
        prefix += s.text
    [last] = engine.generate([GenRequest("c", prompt, prefix, stop=(DELIM,), seed=3)])[0].samples
    assert last.finish_reason == "eos" and last.text.startswith("The answer is")
    [whole] = engine.generate([GenRequest("w", prompt, seed=3)])[0].samples
    assert prefix + last.text == whole.text


def test_max_new_tokens_counts_words_and_finishes_length():
    engine = SimEngine()
    spec = generate(1, seed=14, mix={5: 1.0})[0]
    for limit in (0, 1, 7, 13):
        [result] = engine.generate([GenRequest("k", _prompt(engine, spec.question), n=3, max_new_tokens=limit)])
        for s in result.samples:
            assert s.finish_reason == "length"
            assert len(s.text.split()) == len(s.token_ids) == limit
        assert result.completion_tokens == 3 * limit


def test_token_ids_and_counts_are_deterministic_word_hashes():
    engine = SimEngine(SimConfig(vocab_size=100))
    spec = generate(1, seed=15)[0]
    prompt = _prompt(engine, spec.question)
    [result] = engine.generate([GenRequest("k", prompt, "x y" + DELIM, n=2)])
    assert result.prompt_tokens == len(prompt.split()) + 2
    assert result.completion_tokens == sum(len(s.token_ids) for s in result.samples)
    assert result.cached_tokens == 0 and result.engine_id == "sim" and result.request_key == "k"
    a, b = result.samples
    words = {}
    for s in (a, b):
        assert all(0 <= t < 100 for t in s.token_ids)
        for w, t in zip(s.text.split(), s.token_ids, strict=True):
            assert words.setdefault(w, t) == t  # one word, one id


def test_greedy_samples_are_identical():
    engine = SimEngine(SimConfig(arith_error_rate=0.5))
    spec = generate(1, seed=16, mix={6: 1.0})[0]
    texts = {s.text for s in _samples(engine, spec.question, n=5, temperature=0.0)}
    assert len(texts) == 1


def test_non_arith_prompt_says_it_cannot_parse_and_answers_zero():
    engine = SimEngine()
    for prompt in ("", "What is the capital of France?", "<|user|>\nMia has 3 cats.\n<|assistant|>\n"):
        [result] = engine.generate([GenRequest("k", prompt, n=3)])
        for s in result.samples:
            steps = step_texts(s.text, DELIM)
            assert len(steps) == 2 and steps[1] == "The answer is 0." and s.finish_reason == "eos"


def test_the_last_question_in_a_few_shot_prompt_is_the_one_answered():
    engine = SimEngine(NO_ERRORS)
    shot, spec = generate(2, seed=17, mix={2: 1.0})
    prompt = engine.apply_chat_template([
        {"role": "system", "content": "Solve step by step."},
        {"role": "user", "content": shot.question},
        {"role": "assistant", "content": f"The answer is {shot.answer}."},
        {"role": "user", "content": spec.question},
    ])
    [s] = engine.generate([GenRequest("k", prompt)])[0].samples
    assert _answer(s.text) == spec.answer and prompt.endswith("<|assistant|>\n")


def test_problem_skill_makes_accuracy_vary_between_problems():
    engine = SimEngine(SimConfig(arith_error_rate=0.15, logic_error_rate=0.05, skill_spread=2.0))
    accuracies = []
    for spec in generate(25, seed=18, mix={4: 1.0}):
        samples = _samples(engine, spec.question, n=30)
        accuracies.append(sum(_answer(s.text) == spec.answer for s in samples) / len(samples))
    assert max(accuracies) - min(accuracies) > 0.4


def test_latency_sleeps_per_call(monkeypatch):
    slept = []
    monkeypatch.setattr("cluster.sim_engine.time.sleep", slept.append)
    engine = SimEngine(SimConfig(latency_s=0.5, latency_per_request_s=0.25))
    engine.generate([GenRequest("a", ""), GenRequest("b", "")])
    SimEngine().generate([GenRequest("a", "")])
    assert slept == [1.0]


@pytest.mark.parametrize("bad", [{"arith_error_rate": 1.5}, {"recovery_rate": -0.1}, {"delimiter": ""},
                                 {"latency_s": -1.0}, {"vocab_size": 0}])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        SimConfig(**bad)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(TypeError):
        SimConfig(error_rate=0.1)


def test_engine_contract():
    results = check_engine_contract(SimEngine())
    assert all(r.cached_tokens == 0 for r in results)  # the sim has no cache to report
    spec = generate(1, seed=19, mix={6: 1.0})[0]

    class ArithPrompted(SimEngine):
        """The contract's own question swapped for an arith one, so the arith path is checked too."""

        def apply_chat_template(self, messages):
            return super().apply_chat_template([{"role": "user", "content": spec.question}])

    results = check_engine_contract(ArithPrompted(SimConfig(arith_error_rate=0.3)))
    assert any(re.search(r"\d+ [-+*/] \d+ = \d+", s.text) for r in results for s in r.samples)  # it did arithmetic
