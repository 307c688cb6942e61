"""KV-cache transfer in disaggregated serving: the link that joins a prefill and a decode instance, and how long one
prompt's KV cache takes over it through a connector (conf/calibration/kv-transfer.yaml).

    time = connector overhead + prompt tokens x KV bytes per token per rank / (link GB/s per GPU)

Each TP rank of the smaller pool sends its shard over its own link at once (NIXL and Mooncake move every rank's
blocks in parallel); an MLA cache is the same on every rank, so its rank sends the whole latent.
"""

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import yaml

from planner import memory, perf
from planner.errors import InputError, did_you_mean
from planner.fastyaml import FAST_LOADER
from planner.specs import Dtype, HwSpec, Interconnect, KvPrecision, ModelSpec


@dataclass(frozen=True)
class Connector:
    """One KV connector: its name in each engine (None: the engine has none by that name) and its cost."""

    name: str
    vllm: Optional[str]
    sglang: Optional[str]
    dynamo: Optional[str]
    overhead_s: float  # per transfer, besides the bytes
    rdma_efficiency: float  # achieved share of an RDMA link
    measured: bool  # False: figures borrowed from another connector (the plan says so)


@dataclass(frozen=True)
class Link:
    """The path a prompt's KV takes from a prefill to a decode instance: its name and achieved GB/s per GPU."""

    name: str  # nvlink, xgmi, pcie, rdma
    gb_s: float
    why: str


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    text = resources.files("conf").joinpath("calibration", "kv-transfer.yaml").read_text()
    return yaml.load(text, Loader=FAST_LOADER)


def connectors() -> dict[str, Connector]:
    """Every connector of conf/calibration/kv-transfer.yaml by name."""
    return {name: Connector(name=name, vllm=c.get("vllm"), sglang=c.get("sglang"), dynamo=c.get("dynamo"),
                            overhead_s=float(c["overhead_ms"]) * 1e-3, rdma_efficiency=float(c["rdma_efficiency"]),
                            measured=bool(c["measured"]))
            for name, c in _table()["connectors"].items()}


def connector(name: Optional[str] = None) -> Connector:
    """The connector called `name` (None: the default one every engine here speaks); InputError for another name."""
    known = connectors()
    if name is not None and name not in known:
        raise InputError(f"plan.kv_connector={name}: not a KV connector here.{did_you_mean(name, known)} Known: "
                         f"{', '.join(known)} (conf/calibration/kv-transfer.yaml). Fix: one of these, or leave it "
                         "unset "
                         f"({_table()['default_connector']}).")
    return known[name or _table()["default_connector"]]


def link(hw: HwSpec, gpus: int, conn: Connector) -> Optional[Link]:
    """The link between the instances of a disaggregated deployment of `gpus` GPUs on `hw`: inside one node the GPUs'
    own fabric at its measured bus bandwidth (perf-default.yaml allreduce: NVLink, xGMI, PCIe); across nodes GPUDirect
    RDMA on each GPU's share of the node's network (inter_node_bandwidth_gb_s / gpus_per_node) at the connector's
    measured efficiency. None when the pools span nodes and the preset gives no network bandwidth."""
    cal = perf.calibration(hw.gpu.name)
    if gpus <= hw.gpus_per_node:
        if hw.intra_node is Interconnect.nvlink and hw.gpu.nvlink_bandwidth_gb_s:
            return Link("nvlink", cal.nvlink_bus_gb_s, f"NVLink, {cal.nvlink_bus_gb_s:g} GB/s per GPU (the measured "
                                                       "NCCL bus bandwidth, conf/calibration/perf-default.yaml)")
        if hw.intra_node is Interconnect.xgmi and cal.xgmi_link_gb_s:
            return Link("xgmi", cal.xgmi_link_gb_s, f"one xGMI link, {cal.xgmi_link_gb_s:g} GB/s usable")
        return Link("pcie", cal.pcie_bus_gb_s, f"PCIe, {cal.pcie_bus_gb_s:g} GB/s per GPU (perf-default.yaml)")
    if not hw.inter_node_bandwidth_gb_s:
        return None
    per_gpu = hw.inter_node_bandwidth_gb_s / hw.gpus_per_node * conn.rdma_efficiency
    return Link("rdma", per_gpu, f"GPUDirect RDMA between nodes, {hw.inter_node_bandwidth_gb_s:g} GB/s per node / "
                                 f"{hw.gpus_per_node} GPUs x {conn.rdma_efficiency:.0%} achieved ({conn.name})")


def bytes_per_link(model: ModelSpec, kv: KvPrecision, dtype: Dtype, tokens, tp_prefill: int, tp_decode: int):
    """KV bytes one link carries for a prompt of `tokens` tokens (arrays broadcast): a rank's shard of the smaller
    pool (GQA heads split over TP; an MLA latent whole on every rank)."""
    per_token = memory.kv_bytes_per_token(model, perf.act_kv(kv, dtype), min(tp_prefill, tp_decode), 1)
    return tokens * per_token


def seconds(model: ModelSpec, kv: KvPrecision, dtype: Dtype, tokens, tp_prefill: int, tp_decode: int,
            path: Link, conn: Connector):
    """Seconds one prompt's KV takes from the prefill to the decode instance (arrays broadcast)."""
    return conn.overhead_s + bytes_per_link(model, kv, dtype, tokens, tp_prefill, tp_decode) / (path.gb_s * 1e9)
