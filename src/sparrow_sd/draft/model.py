"""The Sparrow draft: one Llama-style decoder layer over the target's hidden states.

Each item's input is ``fc(concat(embed_norm(embedding), hidden))``: the token's
embedding (the target's own, frozen; or a vision feature, for the visual baselines)
next to the target hidden state of the previous position. One decoder layer, a
final norm and an LM head (the target's rows for the draft vocabulary, frozen)
predict the next token; the normed output is also the hidden state fed back as
the "target state" of the next tree level, since it stands where the target's
final-normed state stood.

Parameter names follow EAGLE-3 (``fc``, ``midlayer.*``, ``norm``, ``lm_head``,
``d2t``, ``t2d``) so checkpoints read naturally to users of that ecosystem.
With ``architecture="eagle3"`` the layer is EAGLE-3's own (see
:class:`~sparrow_sd.draft.config.DraftConfig`), which ``sparrow export --to eagle3``
writes out unchanged.
``d2t[i]`` is the offset from draft token ``i`` to its target id, ``t2d[j]`` says
whether target token ``j`` is in the draft vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DraftTargetMismatchError
from .config import DraftConfig
from .kv import AttendPlan, DraftKV


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(nn.Module):
    def __init__(self, config: DraftConfig, input_size: int | None = None):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        h = config.hidden_size
        x = input_size or h
        self.q_proj = nn.Linear(x, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(x, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(x, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=False)

    def forward(self, x: torch.Tensor, cos_sin, kv: DraftKV, plan: AttendPlan) -> torch.Tensor:
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.num_heads, self.head_dim).transpose(0, 1)[None]
        k = self.k_proj(x).view(t, self.num_kv_heads, self.head_dim).transpose(0, 1)[None]
        v = self.v_proj(x).view(t, self.num_kv_heads, self.head_dim).transpose(0, 1)[None]
        cos, sin = cos_sin
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        keys, values = kv.write_and_read(plan, k, v)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        if plan.mask is None:
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=plan.mask[None, None])
        return self.o_proj(out[0].transpose(0, 1).reshape(t, -1))


class MLP(nn.Module):
    def __init__(self, config: DraftConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: DraftConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos_sin, kv, plan):
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, kv, plan)
        return x + self.mlp(self.post_attention_layernorm(x))


class Eagle3DecoderLayer(nn.Module):
    """EAGLE-3's layer: attention over [normed embedding, normed state] (2H wide), the state as residual."""

    def __init__(self, config: DraftConfig):
        super().__init__()
        h = config.hidden_size
        self.input_layernorm = RMSNorm(h, config.rms_norm_eps)
        self.hidden_norm = RMSNorm(h, config.rms_norm_eps)
        self.self_attn = Attention(config, input_size=2 * h)
        self.post_attention_layernorm = RMSNorm(h, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, embeds, state, cos_sin, kv, plan):
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(state)], dim=-1)
        x = state + self.self_attn(x, cos_sin, kv, plan)
        return x + self.mlp(self.post_attention_layernorm(x))


class Draft(nn.Module):
    """The one-layer draft every method in the suite uses: Sparrow and its peers alike.

    What it reads is set by its config (``visual_mode``: none, glimpse, full,
    pruned; ``architecture``: sparrow or eagle3), so "Sparrow" names a recipe
    (text-anchored, IVSB, MTP), not this container.
    """

    def __init__(self, config: DraftConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        if config.architecture == "eagle3":
            self.fc = nn.Linear(3 * h, h, bias=False)
            self.midlayer = Eagle3DecoderLayer(config)
        else:
            self.embed_norm = RMSNorm(h, config.rms_norm_eps)
            self.fc = nn.Linear(2 * h, h, bias=False)
            self.midlayer = DecoderLayer(config)
        self.norm = RMSNorm(h, config.rms_norm_eps)
        self.lm_head = nn.Linear(h, config.draft_vocab_size, bias=False)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.register_buffer("d2t", torch.zeros(config.draft_vocab_size, dtype=torch.long))
        self.register_buffer("t2d", torch.ones(config.vocab_size, dtype=torch.bool))

    @classmethod
    def from_target(cls, target, config: DraftConfig, draft_vocab: torch.Tensor | None = None, seed: int = 0):
        """A fresh draft for ``target`` (a TargetAdapter): LM head rows copied from it, the other
        weights drawn from ``seed`` (the global RNG is not touched).

        ``draft_vocab``: target token ids the draft may propose (sorted, unique); None
        for the whole vocabulary.
        """
        if draft_vocab is not None:
            draft_vocab = torch.as_tensor(draft_vocab, dtype=torch.long).unique(sorted=True)
            config.draft_vocab_size = draft_vocab.numel()
        with torch.random.fork_rng(devices=[]):  # weights from ``seed``; the caller's RNG left as it was
            torch.manual_seed(seed)
            draft = cls(config)
        draft.check_target(target)
        with torch.no_grad():
            weight = target.lm_head.weight.detach().float().cpu()
            if draft_vocab is None:
                draft.lm_head.weight.copy_(weight)
            else:
                draft.lm_head.weight.copy_(weight[draft_vocab])
                draft.d2t.copy_(draft_vocab - torch.arange(draft_vocab.numel()))
                draft.t2d.zero_()
                draft.t2d[draft_vocab] = True
        draft.lm_head.weight.requires_grad_(False)
        return draft.to(device=target.device, dtype=target.dtype).eval()

    def check_target(self, target) -> None:
        """Refuse a target this draft was not built for, naming the mismatch."""
        cfg = self.config
        problems = []
        if cfg.hidden_size != target.hidden_size:
            problems.append(f"hidden size {cfg.hidden_size} vs target {target.hidden_size}")
        if cfg.vocab_size != target.vocab_size:
            problems.append(f"vocabulary {cfg.vocab_size} vs target {target.vocab_size}")
        if cfg.ivsb_layer is not None and not 0 <= cfg.ivsb_layer < target.num_layers:
            problems.append(f"IVSB layer {cfg.ivsb_layer} but the target has {target.num_layers} layers")
        for layer in cfg.aux_layers or ():
            if not 0 <= layer < target.num_layers:
                problems.append(f"aux layer {layer} but the target has {target.num_layers} layers")
        model_type = getattr(target.model.config, "model_type", None)
        if cfg.target_model_type is not None and cfg.target_model_type != model_type:
            problems.append(f"built for {cfg.target_model_type}, target is {model_type}")
        if problems:
            raise DraftTargetMismatchError("draft does not fit this target: " + "; ".join(problems))

    def to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids]

    @property
    def state_size(self) -> int:
        """Width of the target state one item reads: H, or 3H for eagle3's aux layers."""
        return self.fc.in_features - (self.config.hidden_size if self.config.architecture == "sparrow" else 0)

    def forward(self, embeds: torch.Tensor, hidden: torch.Tensor, kv: DraftKV, plan: AttendPlan):
        """(T, H) embeddings and previous-position states -> (fed-back state, logits).

        ``hidden`` is the target's state (``state_size`` wide) or the draft's own
        fed-back output (H wide; the same thing for the sparrow architecture).
        Logits are over the draft vocabulary; map indices with :meth:`to_target_ids`.
        """
        if self.config.architecture == "eagle3":
            if hidden.shape[-1] == self.fc.in_features:
                hidden = self.fc(hidden)   # the target's aux layers -> the draft's state
            elif hidden.shape[-1] != self.config.hidden_size:
                raise DraftTargetMismatchError(f"eagle3 draft got states of width {hidden.shape[-1]}, expected "
                                               f"{self.fc.in_features} (target) or {self.config.hidden_size} (own)")
            cos_sin = self.rotary(plan.positions, hidden.dtype)
            out = self.midlayer(embeds, hidden, cos_sin, kv, plan)
            return out, self.lm_head(self.norm(out))
        x = self.fc(torch.cat([self.embed_norm(embeds), hidden], dim=-1))
        cos_sin = self.rotary(plan.positions, x.dtype)
        x = self.midlayer(x, cos_sin, kv, plan)
        out = self.norm(x)
        return out, self.lm_head(out)

    def new_cache(self, capacity: int, device, dtype) -> DraftKV:
        cfg = self.config
        return DraftKV(cfg.num_key_value_heads, cfg.head_dim, capacity, cfg.window, dtype, device)
