"""A tiny random Llama + character-level tokenizer, built in code (no downloads) for engine tests.

The tokenizer maps every printable ASCII character (plus newline) to one token, so any text round-trips
exactly and the same text always gives the same ids — tests can compare greedy continuations character by
character. The chat template is ChatML, like SmolLM2's, with ``<|im_end|>`` as EOS.

Tests get the built folder from the session fixture ``tiny_model_dir`` (``tests/conftest.py``):

    def test_something(tiny_model_dir):
        engine = TransformersEngine(TransformersConfig(str(tiny_model_dir)))
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<|im_start|>", "<|im_end|>")  # pad, turn start, turn end (= EOS)
CHARS = string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")  # letters, digits, ws, punct
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MODEL_SHAPE = dict(  # small enough to run a forward in ~1 ms, deep enough (2 layers) to test cache handling
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, as in SmolLM2
    max_position_embeddings=1024,
    initializer_range=0.3,  # large random weights give sharp attention, so wrong positions or masks show up
)
INIT_SEED = 0  # weights are random but fixed, so greedy outputs are stable across runs


def build_tokenizer():
    """A fast tokenizer with one token per character and ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARS))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: every character is its own token
    backend.decoder = decoders.Fuse()  # join tokens without inserting spaces
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model_dir(out_dir: Path) -> Path:
    """Save a tiny random LlamaForCausalLM and its tokenizer into ``out_dir``; returns ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **MODEL_SHAPE,
    )
    torch.manual_seed(INIT_SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
