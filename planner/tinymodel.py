"""Generate (once, then reuse) a tiny random-weight Llama checkpoint plus BPE tokenizer, offline.

It lets tests start a real vLLM server and check the planner's memory arithmetic without downloading anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

# Bump when the generator's code changes in a way that alters its output, so old caches are not reused.
GENERATOR_VERSION = 3

CORPUS_PATH = Path(__file__).parent / "data" / "tiny_corpus.txt"

# Written last into the build directory: a cache dir without it was not produced by a finished build.
COMPLETE_MARKER = ".complete"

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"
CHAT_START = "<|im_start|>"
CHAT_END = "<|im_end|>"

# ChatML-style template; vLLM's /v1/chat/completions refuses to serve a model without one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class TinyLlamaParams:
    """Shape of the generated model; every field feeds the cache-directory hash."""

    hidden_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    # 2 KV heads so tensor parallel 2 gives 1 head per rank, and TP 4 exercises KV-head replication.
    num_key_value_heads: int = 2
    # head_dim = 256 / 4 = 64: vLLM's CPU attention kernel rejects head_dim 16, accepts 64.
    intermediate_size: int = 512
    # Model vocab rows; the trained tokenizer may use fewer ids (a 30 KB corpus cannot fill 2048 merges).
    vocab_size: int = 2048
    tokenizer_vocab_size: int = 2000
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"
    seed: int = 1234

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


DEFAULT_PARAMS = TinyLlamaParams()


def params_hash(params: TinyLlamaParams = DEFAULT_PARAMS) -> str:
    """Short hash of everything that determines the generated files (params, code version, corpus)."""
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(params), sort_keys=True).encode())
    h.update(f"generator-v{GENERATOR_VERSION}".encode())
    # The corpus decides the tokenizer, so editing it must lead to a fresh directory.
    h.update(CORPUS_PATH.read_bytes())
    return h.hexdigest()[:12]


def default_cache_root() -> Path:
    env = os.environ.get("PLANNER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "planner" / "models"


def ensure_tiny_model(cache_dir: Path | None = None, params: TinyLlamaParams = DEFAULT_PARAMS) -> Path:
    """Return a directory holding the tiny model, building it first if it is not there yet.

    `cache_dir` is the parent directory; the model lives in `<cache_dir>/tiny-llama-<hash>`. Concurrent callers
    are safe: each builds in a private temp dir beside the target and publishes it with one atomic rename.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    target = root / f"tiny-llama-{params_hash(params)}"
    return build_once(target, lambda tmp: _build(tmp, params), params_hash(params))


def build_once(target: Path, build: Callable[[Path], None], marker: str) -> Path:
    """Build `target` once, safely against concurrent callers: `build` fills a private temp dir beside the target,
    which is published with one atomic rename once it holds COMPLETE_MARKER (text `marker`)."""
    if (target / COMPLETE_MARKER).is_file():
        return target
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    if target.exists():
        # Our builds only ever appear via rename of a finished dir, so this is debris from something else
        # (a manual copy, a crashed older layout). Move it aside rather than trust or delete it in place,
        # which could race with a reader.
        _move_aside(target)

    # Same parent as the target so os.rename stays on one file system (and therefore atomic).
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        build(tmp)
        (tmp / COMPLETE_MARKER).write_text(marker + "\n")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process published first (rename onto a non-empty dir fails); its result is equivalent.
            if not (target / COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _move_aside(path: Path) -> None:
    aside = path.with_name(f".{path.name}.stale-{os.getpid()}")
    with contextlib.suppress(OSError):
        os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Make any hub lookup fail fast instead of reaching the network; restore the caller's env afterwards."""
    keys = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build(out: Path, params: TinyLlamaParams) -> None:
    with _offline_env():
        tokenizer = _build_tokenizer(params)
        _build_model(out, params, tokenizer)
        tokenizer.save_pretrained(str(out))
    _portable_tokenizer_config(out)
    # mkdtemp creates 0700 and safetensors writes 0600: open them up so a shared cache works for other users.
    os.chmod(out, 0o755)
    for f in out.iterdir():
        os.chmod(f, 0o644)


def _portable_tokenizer_config(out: Path) -> None:
    """transformers 5 writes tokenizer_class "TokenizersBackend", a name 4.x cannot resolve; the classic
    "PreTrainedTokenizerFast" loads in both (5.x aliases it), so vLLM pinned to either version can read it."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    # 5.x writes a list under extra_special_tokens; 4.x expects a dict there and a list under
    # additional_special_tokens, which 5.x still accepts.
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = extra
    elif extra:
        cfg["extra_special_tokens"] = extra
    # 4.x reads the template from here; 5.x from chat_template.jinja (also written). Keep both in sync.
    cfg.setdefault("chat_template", CHAT_TEMPLATE)
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _build_tokenizer(params: TinyLlamaParams):
    # Heavy imports stay here so importing planner.tinymodel (e.g. for params_hash) is cheap.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, CHAT_START, CHAT_END]
    tok = Tokenizer(models.BPE())
    # Byte-level: any string (emoji, code, other scripts) encodes, so tests can send arbitrary prompts.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=params.tokenizer_vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(CORPUS_PATH)], trainer=trainer)
    # Llama convention: prepend BOS when special tokens are requested.
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    if tok.get_vocab_size() > params.vocab_size:
        raise ValueError(f"tokenizer has {tok.get_vocab_size()} ids but the model only {params.vocab_size} rows")

    # Wrapping in the transformers class makes save_pretrained write tokenizer_config.json in the format
    # this transformers version (and vLLM, which loads through AutoTokenizer) expects.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[CHAT_START, CHAT_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=params.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )


def _build_model(out: Path, params: TinyLlamaParams, tokenizer) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=params.vocab_size,
        hidden_size=params.hidden_size,
        intermediate_size=params.intermediate_size,
        num_hidden_layers=params.num_hidden_layers,
        num_attention_heads=params.num_attention_heads,
        num_key_value_heads=params.num_key_value_heads,
        head_dim=params.head_dim,
        max_position_embeddings=params.max_position_embeddings,
        rms_norm_eps=params.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": params.rope_theta},
        tie_word_embeddings=params.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=params.dtype,
    )
    # Seeded so the same params give the same weights (reproducible generations in tests).
    torch.manual_seed(params.seed)
    model = LlamaForCausalLM(config).to(getattr(torch, params.dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(out), safe_serialization=True)


if __name__ == "__main__":
    print(ensure_tiny_model())
