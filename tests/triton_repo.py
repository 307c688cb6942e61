"""Read a rendered Triton model repository the way Triton and its backends do, for the tests: config.pbtxt through
Triton's own ModelConfig message (model_config.proto, compiled in the tritonclient package), model.json as JSON, the
engine build flags from build_engine.sh. `value(art, key)` finds a flag-table key (backends/triton_*.py) where the
backend reads it."""

import json
import shlex

import pytest


def model_config(text: str):
    """config.pbtxt parsed by protobuf's text format into Triton's ModelConfig (fails on any unknown field)."""
    pytest.importorskip("tritonclient")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def parameters(cfg) -> dict:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def build_flags(script: str) -> dict:
    """The flags of the engine-build commands of build_engine.sh (flag -> value)."""
    words = [w for line in script.splitlines() if line.strip().startswith(("trtllm-build", "python3 \""))
             or "convert_checkpoint.py" in line or "quantize.py" in line for w in shlex.split(line, comments=True)]
    return dict(zip(words, words[1:]))


def value(art, key: str):
    """Where the backend reads `key` of its flag table, and the value there (typed as the table renders it)."""
    files = art.files
    if "model_repository/vllm_model/1/model.json" in files:
        return json.loads(files["model_repository/vllm_model/1/model.json"])[key]
    if key.startswith("build."):
        flag = build_flags(files["build_engine.sh"]).get("--" + key.split(".", 1)[1])
        return None if flag is None else _typed(flag)
    models = {m: model_config(files[f"model_repository/{m}/config.pbtxt"])
              for m in ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing")}
    if key == "max_batch_size":
        found = {m: c.max_batch_size for m, c in models.items()}
        assert len(set(found.values())) == 1, found  # every model of the ensemble batches alike
        return found["tensorrt_llm"]
    if key == "tokenizer_dir":
        found = {parameters(models[m])["tokenizer_dir"] for m in ("preprocessing", "postprocessing")}
        assert len(found) == 1, found
        return found.pop()
    return _typed(parameters(models["tensorrt_llm"])[key])


def _typed(text: str):
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
