"""Model shapes: the architecture record, its GGUF tensor list, parameter count and KV layout per layer.

Tensor names and shapes follow llama.cpp's GGUF conventions (``gguf-py/gguf/constants.py`` MODEL_TENSORS):
``ne0`` is the row length (the input width) and is what the block-size rules look at.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

MAX_LAYERS = 1024
MAX_CONTEXT = 10_000_000


class Tensor(NamedTuple):
    name: str
    ne0: int  # row length
    ne1: int = 1  # rows
    n_expert: int = 1  # third dimension of merged expert tensors

    @property
    def n_elements(self) -> int:
        return self.ne0 * self.ne1 * self.n_expert

    @property
    def is_1d(self) -> bool:
        return self.ne1 == 1 and self.n_expert == 1


class Architecture(NamedTuple):
    """One model's shape. Attention: ``heads`` x ``head_dim`` queries, ``kv_heads`` x ``head_dim`` keys/values."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ff: int  # dense FFN width (0 when every layer is MoE)
    vocab: int
    tied: bool = False
    context: int = 4096  # the model's own maximum context (max_position_embeddings)
    sliding_window: int | None = None
    global_every: int = 0  # layer i is global when (i + 1) % global_every == 0; others slide
    moe_experts: int = 0
    moe_active: int = 0
    moe_ff: int = 0
    moe_shared: int = 0
    dense_layers: int = 0  # first layers with a dense FFN in a MoE model (DeepSeek: 3)
    kv_lora: int = 0  # MLA: cached latent width (DeepSeek: 512); 0 = ordinary attention
    q_lora: int = 0
    rope_dim: int = 0
    nope_dim: int = 0
    v_head_dim: int = 0
    qkv_bias: bool = False
    qk_norm: bool = False
    norms: int = 2  # 1-D norm vectors per layer (Gemma: 4)
    fused_qkv: bool = False  # Phi-3 stores attn_qkv and a fused ffn_up
    attn_bias_sinks: bool = False  # gpt-oss: attention and expert biases, attention sinks
    gguf_arch: str = "llama"

    def problems(self) -> list[str]:
        """Fields outside what any real model has: a damaged or hostile header must not drive the estimate
        (a billion layers would also make every per-layer loop hang)."""
        out = [f"{name}={value} (expected {lo}..{hi})" for name, value, lo, hi in (
            ("layers", self.layers, 1, MAX_LAYERS), ("hidden", self.hidden, 1, 1 << 17),
            ("heads", self.heads, 1, 4096), ("kv_heads", self.kv_heads, 0 if self.kv_lora else 1, 4096),
            ("head_dim", self.head_dim, 1, 1 << 14), ("ff", self.ff, 0, 1 << 21), ("vocab", self.vocab, 1, 1 << 23),
            ("context", self.context, 1, MAX_CONTEXT), ("moe_experts", self.moe_experts, 0, 1 << 13),
            ("moe_active", self.moe_active, 0, max(0, self.moe_experts)), ("moe_ff", self.moe_ff, 0, 1 << 21),
            ("moe_shared", self.moe_shared, 0, 64), ("dense_layers", self.dense_layers, 0, self.layers),
            ("kv_lora", self.kv_lora, 0, 1 << 14), ("sliding_window", self.sliding_window or 0, 0, MAX_CONTEXT),
            ("q_lora", self.q_lora, 0, 1 << 16), ("rope_dim", self.rope_dim, 0, 1 << 14),
            ("nope_dim", self.nope_dim, 0, 1 << 14), ("v_head_dim", self.v_head_dim, 0, 1 << 14),
        ) if not lo <= value <= hi]
        if self.is_moe and self.moe_active == 0:
            out.append(f"moe_active=0 with {self.moe_experts} experts")
        return out

    @property
    def is_moe(self) -> bool:
        return self.moe_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora > 0

    def with_context(self, context: int) -> Architecture:
        return self._replace(context=context)

    def is_sliding(self, layer: int) -> bool:
        if not self.sliding_window or self.global_every <= 0:
            return False
        return (layer + 1) % self.global_every != 0

    def kv_widths(self, layer: int) -> tuple[int, int]:
        """(K width, V width) in elements per token for ``layer``, as llama.cpp caches them."""
        if self.is_mla:
            return self.kv_lora + self.rope_dim, 0  # only the compressed latent and the rope part
        width = self.kv_heads * self.head_dim
        return width, width

    def kv_bytes_per_token_f16(self) -> int:
        return sum(2 * (k + v) for k, v in (self.kv_widths(i) for i in range(self.layers)))

    def tensors(self) -> Iterator[Tensor]:
        """Every tensor llama.cpp stores for this model, in file order."""
        h, v = self.hidden, self.vocab
        yield Tensor("token_embd.weight", h, v)
        for i in range(self.layers):
            yield from self._layer(i)
        yield Tensor("output_norm.weight", h)
        if not self.tied:
            yield Tensor("output.weight", h, v)

    def _layer(self, i: int) -> Iterator[Tensor]:
        h, p = self.hidden, f"blk.{i}."
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        yield Tensor(p + "attn_norm.weight", h)
        if self.is_mla:
            qk = self.nope_dim + self.rope_dim
            if self.q_lora:
                yield Tensor(p + "attn_q_a.weight", h, self.q_lora)
                yield Tensor(p + "attn_q_a_norm.weight", self.q_lora)
                yield Tensor(p + "attn_q_b.weight", self.q_lora, self.heads * qk)
            else:
                yield Tensor(p + "attn_q.weight", h, self.heads * qk)
            yield Tensor(p + "attn_kv_a_mqa.weight", h, self.kv_lora + self.rope_dim)
            yield Tensor(p + "attn_kv_a_norm.weight", self.kv_lora)
            yield Tensor(p + "attn_kv_b.weight", self.kv_lora, self.heads * (self.nope_dim + self.v_head_dim))
            yield Tensor(p + "attn_output.weight", self.heads * self.v_head_dim, h)
        elif self.fused_qkv:
            yield Tensor(p + "attn_qkv.weight", h, q_width + 2 * kv_width)
            yield Tensor(p + "attn_output.weight", q_width, h)
        else:
            yield Tensor(p + "attn_q.weight", h, q_width)
            yield Tensor(p + "attn_k.weight", h, kv_width)
            yield Tensor(p + "attn_v.weight", h, kv_width)
            yield Tensor(p + "attn_output.weight", q_width, h)
            if self.qkv_bias or self.attn_bias_sinks:
                yield Tensor(p + "attn_q.bias", q_width)
                yield Tensor(p + "attn_k.bias", kv_width)
                yield Tensor(p + "attn_v.bias", kv_width)
            if self.attn_bias_sinks:
                yield Tensor(p + "attn_output.bias", h)
                yield Tensor(p + "attn_sinks.weight", self.heads)
        if self.qk_norm:
            yield Tensor(p + "attn_q_norm.weight", self.head_dim)
            yield Tensor(p + "attn_k_norm.weight", self.head_dim)
        for n in range(self.norms - 1):
            yield Tensor(p + ("ffn_norm.weight", "post_attention_norm.weight", "post_ffw_norm.weight")[n], h)
        if self.is_moe and i >= self.dense_layers:
            e, f = self.moe_experts, self.moe_ff
            yield Tensor(p + "ffn_gate_inp.weight", h, e)
            yield Tensor(p + "ffn_gate_exps.weight", h, f, e)
            yield Tensor(p + "ffn_up_exps.weight", h, f, e)
            yield Tensor(p + "ffn_down_exps.weight", f, h, e)
            if self.attn_bias_sinks:
                yield Tensor(p + "ffn_gate_inp.bias", e)
                yield Tensor(p + "ffn_gate_exps.bias", f, e)
                yield Tensor(p + "ffn_up_exps.bias", f, e)
                yield Tensor(p + "ffn_down_exps.bias", h, e)
            if self.moe_shared:
                s = f * self.moe_shared
                yield Tensor(p + "ffn_gate_shexp.weight", h, s)
                yield Tensor(p + "ffn_up_shexp.weight", h, s)
                yield Tensor(p + "ffn_down_shexp.weight", s, h)
            if self.is_mla:
                yield Tensor(p + "exp_probs_b.bias", e)
        elif self.fused_qkv:
            yield Tensor(p + "ffn_up.weight", h, 2 * self.ff)
            yield Tensor(p + "ffn_down.weight", self.ff, h)
        else:
            yield Tensor(p + "ffn_gate.weight", h, self.ff)
            yield Tensor(p + "ffn_up.weight", h, self.ff)
            yield Tensor(p + "ffn_down.weight", self.ff, h)

    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors())

    def n_params_active(self) -> int:
        """Parameters touched per token: all experts count only ``moe_active`` (+ shared) of ``moe_experts``."""
        total = 0
        for t in self.tensors():
            if t.n_expert > 1 or (self.is_moe and "_exps." in t.name):
                total += t.n_elements * self.moe_active // max(1, self.moe_experts)
            else:
                total += t.n_elements
        return total

    def ffn_width_active(self) -> int:
        """The FFN width one token passes through (dense width, or active experts' width plus shared)."""
        if self.is_moe:
            return self.moe_ff * (self.moe_active + self.moe_shared)
        return self.ff


def architecture_from_mapping(name: str, row: Mapping[str, Any]) -> Architecture:
    """Build an Architecture from a catalog row (see ``fleet_watch/data/models.json``)."""
    known = {f for f in Architecture._fields if f != "name"}
    kwargs = {k: row[k] for k in known if k in row and row[k] is not None}
    return Architecture(name=name, **kwargs)


def generic_architecture(params_b: float) -> Architecture:
    """A generic modern dense shape for a model known only by its size (``grounded: false``).

    Shaped like the Llama-3 / Qwen2.5 families: head_dim 128, 8 KV heads (GQA), FFN 3.5x hidden, 128k vocab
    (32k below 1024 wide); the narrowest width whose depth stays within ~8 layers per 1024 of width (as real
    models do), so that the parameter count matches ``params_b`` from a 10M toy to a 10T model.
    """
    target = params_b * 1e9
    name = f"generic-{params_b:g}B"
    vocab = 128256 if target >= 1e9 else 32000
    hidden, layers = 256, 1
    for hidden in range(256, 32769, 256):
        layers = max(1, round((target - 2 * hidden * vocab) / _generic_per_layer(hidden)))
        if layers <= max(2, 8 * hidden // 1024):
            break
    return Architecture(name=name, layers=min(layers, MAX_LAYERS), hidden=hidden, heads=max(2, hidden // 128),
                        kv_heads=min(8, max(1, hidden // 128)), head_dim=128, ff=_generic_ff(hidden), vocab=vocab,
                        context=8192, gguf_arch="llama")


def _generic_ff(hidden: int) -> int:
    return max(256, int(hidden * 3.5) // 256 * 256)


def _generic_per_layer(hidden: int) -> int:
    kv = min(8, max(1, hidden // 128)) * 128
    return 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * _generic_ff(hidden)
