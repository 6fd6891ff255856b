"""The shared request processor (``cluster.requests``): encoding, incremental stop check and detokenization."""

from __future__ import annotations

import pytest

from cluster.engine import GenRequest, GenResult, Sample
from cluster.requests import PromptEncoder, StopChecker, TextStream, Usage, first_stop_end, make_result
from tests.tiny_model import build_tokenizer

TEXT = "Step 1: 3 + 4 = 7.\n\nStep 2: 7 * 2 = 14.\n\nThe answer is 14."


def _byte_tokenizer():
    """One token per UTF-8 byte (byte-level BPE without merges): a character may span several tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


@pytest.mark.parametrize("stops", [("\n\n",), ("= 14",), ("answer", "\n\n"), ("7 * 2", "Step 2"), ("zzz",)])
@pytest.mark.parametrize("piece", [1, 2, 5])
def test_incremental_stop_check_finds_what_a_search_of_the_whole_text_finds(stops, piece):
    checker, end = StopChecker(stops), None
    for i in range(0, len(TEXT), piece):
        end = checker.feed(TEXT[i : i + piece])
        if end is not None:
            break
    assert end == first_stop_end(TEXT, stops)  # e.g. a two-character stop split over two pieces is found
    if end is not None:  # found as soon as the piece holding its last character arrived
        assert len(checker.text) - piece < end <= len(checker.text)


def test_earliest_ending_stop_wins_and_empty_stops_are_ignored():
    assert first_stop_end("a = 7.\n\nb", ("\n\nb", ".")) == 6
    assert StopChecker(("",)).feed("anything") is None


@pytest.mark.parametrize("tokenizer", [build_tokenizer, _byte_tokenizer])
def test_text_stream_pieces_join_to_the_full_decode(tokenizer):
    tok = tokenizer()
    text = "Plain ascii.\n\n" if tokenizer is build_tokenizer else "naïve 2 × 3 = 6 → 你好 ✓\n\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)  # half a character is held back, never emitted


def test_prompt_and_prefix_are_encoded_separately_and_bos_is_added_once():
    tok = build_tokenizer()
    encode = PromptEncoder(tok)
    request = GenRequest("k", "Q: 2+2?", "A: 4")
    assert encode(request) == tok("Q: 2+2?")["input_ids"] + tok("A: 4", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="empty"):
        encode(GenRequest("k", "", ""))


def test_results_and_usage_count_tokens_one_way():
    req = GenRequest("k", "p", n=2)
    res = make_result(req, [Sample("ab", [1, 2], "stop"), Sample("c", [3], "eos")], prompt_tokens=5,
                      cached_tokens=4, engine_id="e")
    assert (res.request_key, res.completion_tokens, res.cached_tokens, res.engine_id) == ("k", 3, 4, "e")
    usage = Usage().add(res).add(GenResult("j", [], prompt_tokens=2, completion_tokens=0))
    assert (usage.requests, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (2, 7, 4, 3)
