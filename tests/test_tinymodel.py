"""The tiny-llama catalog entry describes exactly the model planner/tinymodel.py generates."""

import dataclasses

from planner.tinymodel import DEFAULT_PARAMS

from conftest import request_for


def test_catalog_entry_matches_the_generator():
    spec = request_for("model=tiny-llama").model
    generated = dataclasses.asdict(DEFAULT_PARAMS)
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(spec, field) == generated[field], field
    assert spec.head_dim_eff == 64  # vLLM's CPU attention kernel needs head_dim >= 32 (64 measured to work)
