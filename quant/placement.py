"""Input embeddings served from host memory (`embeddings="host"` in a plan).

The input embedding table is a gather: a window reads ~2,100 of the 7B model's 152,128
rows. `HostEmbedding` keeps the table in CPU RAM (pinned where CUDA exists, so the copy
of the gathered rows is a DMA), looks the ids up there and moves only the result,
(B, L, H) in the table's dtype, to the device the rest of the model is on. Logits are
unchanged: the same rows reach the decoder, bit for bit.

It replaces `model.language_model.embed_tokens` at load (`quant.load`), through
`set_input_embeddings`, which is what `OmniEmotionModel.merge_multimodal` and its
text-only path call before the placeholder features are scattered in — so prefill, the
single-token decode steps and training forwards all go through it.

The table is held outside the module's parameters and buffers on purpose:
`model.to(device)`, `.cuda()`, `state_dict()` and `get_memory_footprint()` do not see
it, so nothing moves it to the GPU by accident. A zero-element buffer (`anchor`)
follows the model's device and tells the wrapper where to send the rows. The table is
frozen (no gradient, and no parameter for an optimizer or `set_trainable_phase` to
find): training with host embeddings is training with frozen input embeddings.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class HostEmbedding(nn.Module):
    """An `nn.Embedding` whose (V, H) table stays in host memory.

    forward: input_ids (B, L) int64 on any device → (B, L, H) in the table's dtype on the
    anchor's device (the model's)."""

    def __init__(self, embedding: nn.Embedding, pin: bool | None = None):
        super().__init__()
        table = embedding.weight.detach().to("cpu")
        if pin is None:
            pin = torch.cuda.is_available()
        if pin:
            table = table.pin_memory()
        self._table = (table.requires_grad_(False),)  # a tuple: invisible to .to()/state_dict
        self.num_embeddings, self.embedding_dim = table.shape
        self.padding_idx = embedding.padding_idx
        self.register_buffer("anchor", torch.empty(0, dtype=table.dtype, device=embedding.weight.device),
                             persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The host table (V, H); read-only by contract (no gradient)."""
        return self._table[0]

    @property
    def pinned(self) -> bool:
        return self.weight.is_pinned()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(input_ids.to("cpu"), self.weight, self.padding_idx)
        device = self.anchor.device
        if device.type == "cpu":
            return rows
        if self.pinned:
            rows = rows.pin_memory()
        return rows.to(device, non_blocking=self.pinned)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, host{' pinned' if self.pinned else ''}"


def embeddings_to_host(model: nn.Module, pin: bool | None = None) -> HostEmbedding:
    """Replace `model`'s input embeddings by a `HostEmbedding` of the same table; the
    device copy is released. Returns the wrapper."""
    host = HostEmbedding(model.get_input_embeddings(), pin=pin)
    model.set_input_embeddings(host)
    return host


def host_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name it replaces: host table} of every `HostEmbedding` in `model`."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, HostEmbedding)}

