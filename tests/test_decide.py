"""Each plan field's decision names what really decided it (the one the table shows: the last for the field)."""

import pytest

from conftest import compiled_or_closest, request_for


def shown(compiled) -> dict:
    return {d.field: d for d in compiled.decisions}  # what present.show prints: a rule's explanation comes last


@pytest.mark.parametrize("overrides,field,by,says", [
    pytest.param(("model=llama3-70b", "hw=h100x8", "plan.tensor_parallel=8"), "tensor_parallel", "pin",
                 "given as plan.tensor_parallel", id="pinned-tp-is-the-pin"),
    pytest.param(("model=llama3-70b", "hw=h100x8", "plan.max_num_seqs=64"), "max_num_seqs", "pin",
                 "given as plan.max_num_seqs", id="pinned-batch-is-the-pin"),
    pytest.param(("model=llama3-70b", "hw=h100x4"), "tensor_parallel", "size.needs-split-or-quantization",
                 "checkpoint's weights", id="unpinned-tp-by-the-size-rule"),
])
def test_the_decision_shown_is_what_decided(overrides, field, by, says):
    d = shown(compiled_or_closest(request_for(*overrides)))[field]
    assert d.by == by and says in d.why


def test_an_fp8_checkpoint_is_not_explained_as_bf16_weights():
    c = compiled_or_closest(request_for("model=deepseek-v3", "hw=h200x8"))
    whys = " ".join(d.why for d in c.decisions)
    assert "bf16 weights exceed" not in whys and c.plan.quantization.value == "fp8"
