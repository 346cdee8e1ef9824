"""Head-level decomposition of a CLIP ViT image embedding into direct contributions.

Follows docs/algorithms.md section 3 (Gandelsman et al., ICLR 2024). One re-computation of the
stock open_clip 3.x vision tower yields, per image, the direct contribution of the embedding
stage, of each layer's MLP at CLS, of each attention head at CLS and (optionally) of each head
x source token for the last layers. ``ln_post`` is linearised with the image's own mean ``mu``
and standard deviation ``sigma`` of the final CLS residual: a residual term ``c`` maps to
``(g * (c - mu * s) / sigma + b * s) @ P / |e|``, where ``s`` is the term's share of the
constant part: ``1/K`` for each of the K = 1 + L + L*H CLS-level terms and ``1/(K*N)`` for a
head x token term (a head's share split evenly over its N source tokens, like ``b_O``). All
terms sum to the normalised embedding ``e / |e|``.

Also here: streaming the contributions of a dataset to sharded ``.npy`` files with a Parquet
index (:func:`write_head_contributions`, :class:`ContributionStore`) and mean-ablation zero-shot
accuracy computed from the stored arrays alone (:func:`mean_ablation_accuracy`,
:func:`mean_ablation_tables`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator, Literal, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cliplens.models import LoadedModel

STORE_FORMAT = "cliplens-head-contributions/1"


@dataclass
class Decomposition:
    """Direct contributions of one batch of B images (float32, on the model's device).

    Shapes: ``embed [B, D]``, ``mlps [B, L, D]``, ``heads [B, L, H, D]``, ``embedding [B, D]``
    (the normalised image embedding), ``norm [B]`` (norm of the unnormalised embedding) and,
    only when asked for, ``head_tokens [B, n, H, N, D]`` for the layers ``token_layers``
    (N = 1 + number of patches; token 0 is CLS, patch j >= 1 at row-major grid position j - 1).
    ``total()`` equals ``embedding``; ``head_tokens.sum(3)`` equals ``heads[:, token_layers]``.
    """

    embed: torch.Tensor
    mlps: torch.Tensor
    heads: torch.Tensor
    embedding: torch.Tensor
    norm: torch.Tensor
    grid_size: tuple[int, int]
    token_layers: tuple[int, ...] = ()
    head_tokens: torch.Tensor | None = None

    @property
    def attns(self) -> torch.Tensor:
        """Per-layer attention contributions [B, L, D] (sum over heads)."""
        return self.heads.sum(dim=2)

    def total(self) -> torch.Tensor:
        """Sum of all CLS-level terms [B, D]; equals ``embedding`` (completeness)."""
        return self.embed + self.mlps.sum(dim=1) + self.heads.sum(dim=(1, 2))


def vision_tower(model: torch.nn.Module | LoadedModel) -> torch.nn.Module:
    """The open_clip ViT image tower of a CLIP model (or the tower itself), checked for support."""
    module = model.model if isinstance(model, LoadedModel) else model
    visual = getattr(module, "visual", module)
    if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
        raise ValueError("head decomposition needs an open_clip VisionTransformer (not a ResNet or timm tower)")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise ValueError("head decomposition supports CLS-token pooling only (pool_type='tok', no attn_pool)")
    if getattr(visual, "proj", None) is None:
        raise ValueError("head decomposition needs the output projection visual.proj")
    if not all(isinstance(block.attn, torch.nn.MultiheadAttention) for block in visual.transformer.resblocks):
        raise ValueError("head decomposition supports the default ResidualAttentionBlock only")
    return visual


def _embeds(visual: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Embedding stage of the tower (patchify, CLS, positions, ln_pre): [B, N, W]."""
    weight = visual.conv1.weight
    x = visual.conv1(images.to(weight.device, weight.dtype)).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


def _attention(block: torch.nn.Module, x: torch.Tensor, need_tokens: bool) -> tuple[torch.Tensor, ...]:
    """Recompute a block's attention on ln_1(x).

    Returns the attention output [B, N, W], the per-head mixed value at CLS [B, H, dh] and,
    when ``need_tokens``, the CLS attention weights times the values, a_0j * v_j [B, H, N, dh].
    """
    attn = block.attn
    batch, num_tokens, width = x.shape
    head_dim = width // attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (t.reshape(batch, num_tokens, attn.num_heads, head_dim).transpose(1, 2) for t in qkv.split(width, -1))
    mixed = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, dh]
    output = attn.out_proj(mixed.transpose(1, 2).reshape(batch, num_tokens, width))
    cls_mix = mixed[:, :, 0].clone()  # a copy, so that the layer's full activations can be freed
    if not need_tokens:
        return output, cls_mix, None
    cls_weights = torch.softmax((q[:, :, :1] * head_dim**-0.5) @ k.transpose(-1, -2), dim=-1)  # [B, H, 1, N]
    return output, cls_mix, cls_weights.transpose(-1, -2) * v


def _head_value_maps(block: torch.nn.Module) -> torch.Tensor:
    """Per-head output maps ls_1(W_O^h) [H, dh, W] from a head's mixed value to the residual."""
    out_proj = block.attn.out_proj
    width = out_proj.weight.shape[0]
    heads = block.attn.num_heads
    return block.ls_1(out_proj.weight.T.reshape(heads, width // heads, width))


@dataclass
class _FrozenLnPost:
    """ln_post followed by P with the image's own mu, sigma frozen, divided by |e| (all [B, 1])."""

    gain: torch.Tensor
    bias: torch.Tensor
    proj: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    norm: torch.Tensor

    def __call__(self, term: torch.Tensor, share: float) -> torch.Tensor:
        """Map residual terms [B, ..., W] carrying ``share`` of the constant part to [B, ..., D]."""
        view = (-1,) + (1,) * (term.dim() - 1)
        centred = term.float() - self.mu.reshape(view) * share
        return (self.gain * centred / self.sigma.reshape(view) + self.bias * share) @ self.proj / self.norm.reshape(view)

    def linear(self, term: torch.Tensor) -> torch.Tensor:
        """Linear part only, for terms [B, ..., D] already mapped through ``(. * gain) @ proj``."""
        view = (-1,) + (1,) * (term.dim() - 1)
        return term / (self.sigma * self.norm).reshape(view)


@torch.inference_mode()
def decompose(
    model: torch.nn.Module | LoadedModel,
    images: torch.Tensor,
    tokens: bool = False,
    last_layers: int = 4,
) -> Decomposition:
    """Decompose the embeddings of a batch of normalised images [B, 3, S, S] (one forward pass).

    ``tokens=True`` also returns the head x source-token terms of the last ``last_layers``
    layers (memory: B * last_layers * H * N * D floats).
    """
    visual = vision_tower(model)
    blocks = visual.transformer.resblocks
    num_layers, num_heads = len(blocks), blocks[0].attn.num_heads
    token_layers = tuple(range(max(num_layers - last_layers, 0), num_layers)) if tokens else ()
    x = _embeds(visual, images)
    embed_term = x[:, 0].clone()  # CLS terms are copied: views would keep every layer's [B, N, W] alive
    mlp_terms, head_terms, token_parts = [], [], []
    for index, block in enumerate(blocks):
        attn_out, cls_mix, weighted_values = _attention(block, x, need_tokens=index in token_layers)
        value_maps = _head_value_maps(block)
        bias_share = block.ls_1(block.attn.out_proj.bias) / num_heads
        head_terms.append(torch.einsum("bhd,hdw->bhw", cls_mix, value_maps) + bias_share)
        if weighted_values is not None:
            token_parts.append((weighted_values, value_maps, bias_share))
        x = x + block.ls_1(attn_out)
        mlp_out = block.ls_2(block.mlp(block.ln_2(x)))
        mlp_terms.append(mlp_out[:, 0].clone())
        x = x + mlp_out

    final = x[:, 0].float()
    ln_post = visual.ln_post
    gain, bias, proj = ln_post.weight.float(), ln_post.bias.float(), visual.proj.float()
    mu = final.mean(dim=-1, keepdim=True)
    sigma = torch.sqrt(final.var(dim=-1, unbiased=False, keepdim=True) + ln_post.eps)
    unnormalised = ((final - mu) / sigma * gain + bias) @ proj
    norm = unnormalised.norm(dim=-1, keepdim=True)
    frozen = _FrozenLnPost(gain, bias, proj, mu, sigma, norm)
    share = 1.0 / (1 + num_layers + num_layers * num_heads)
    result = Decomposition(
        embed=frozen(embed_term, share),
        mlps=frozen(torch.stack(mlp_terms, dim=1), share),
        heads=frozen(torch.stack(head_terms, dim=1), share),
        embedding=unnormalised / norm,
        norm=norm.squeeze(-1),
        grid_size=tuple(visual.grid_size),
        token_layers=token_layers,
    )
    if token_parts:
        result.head_tokens = torch.stack([_head_token_terms(frozen, share, *part) for part in token_parts], dim=1)
    return result


def _head_token_terms(
    frozen: _FrozenLnPost,
    head_share: float,
    weighted_values: torch.Tensor,
    value_maps: torch.Tensor,
    bias_share: torch.Tensor,
) -> torch.Tensor:
    """One layer's head x token terms [B, H, N, D]; summed over tokens they give the head terms."""
    batch, _, num_tokens, _ = weighted_values.shape
    to_output = (value_maps.float() * frozen.gain) @ frozen.proj  # [H, dh, D]
    linear = frozen.linear(torch.einsum("bhnd,hde->bhne", weighted_values.float(), to_output))
    constant = frozen(bias_share.expand(batch, -1) / num_tokens, head_share / num_tokens)  # [B, D]
    return linear + constant[:, None, None, :]


# --------------------------------------------------------------------------- streaming storage


@dataclass
class Contributions:
    """Stored contributions of M images as numpy arrays (rows in dataset order).

    ``embed [M, D]``, ``mlps [M, L, D]``, ``attns [M, L, D]`` (per-layer sum over heads),
    ``heads [M, n, H, D]`` for the layers ``head_layers``, ``embedding [M, D]``; ``ids [M]``.
    """

    ids: np.ndarray
    embed: np.ndarray
    mlps: np.ndarray
    attns: np.ndarray
    heads: np.ndarray
    embedding: np.ndarray
    head_layers: tuple[int, ...]

    @classmethod
    def from_decomposition(
        cls, ids: Sequence[str], result: Decomposition, layers: int | None, dtype: np.dtype | str = np.float32
    ) -> "Contributions":
        """Keep the heads of the last ``layers`` layers (None: all) of a batch's decomposition."""
        num_layers = result.heads.shape[1]
        head_layers = tuple(range(num_layers - min(layers or num_layers, num_layers), num_layers))

        def as_numpy(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().cpu().numpy().astype(dtype)

        return cls(
            ids=np.asarray(ids, dtype=object),
            embed=as_numpy(result.embed),
            mlps=as_numpy(result.mlps),
            attns=as_numpy(result.attns),
            heads=as_numpy(result.heads[:, list(head_layers)]),
            embedding=as_numpy(result.embedding),
            head_layers=head_layers,
        )

    @classmethod
    def concatenate(cls, parts: Sequence["Contributions"]) -> "Contributions":
        """Rows of several parts one after the other (same layout)."""
        arrays = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls) if f.name != "head_layers"}
        return cls(**arrays, head_layers=parts[0].head_layers)

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, rows: int = 4096) -> Iterator["Contributions"]:
        """Consecutive row blocks of at most ``rows`` rows."""
        for start in range(0, len(self), rows):
            yield self.slice(start, start + rows)

    def slice(self, start: int, stop: int) -> "Contributions":
        """Rows start:stop."""
        arrays = {f.name: getattr(self, f.name)[start:stop] for f in fields(self) if f.name != "head_layers"}
        return Contributions(**arrays, head_layers=self.head_layers)

    def total(self) -> np.ndarray:
        """Sum of all terms [M, D] in float32 (the normalised embedding, up to storage rounding)."""
        return self.embed.astype(np.float32) + self.mlps.sum(1, dtype=np.float32) + self.attns.sum(1, dtype=np.float32)

    @property
    def num_layers(self) -> int:
        return self.mlps.shape[1]

    @property
    def num_heads(self) -> int:
        return self.heads.shape[2]

    def head_index(self, layer: int) -> int:
        """Position of layer ``layer`` (negative counts from the end) in ``heads``."""
        return _head_position(self.head_layers, layer, self.num_layers)

    def head_matrix(self, layer: int, head: int) -> np.ndarray:
        """Contributions of one head over all rows, float32 [M, D]."""
        return np.asarray(self.heads[:, self.head_index(layer), head], dtype=np.float32)


def _head_position(head_layers: tuple[int, ...], layer: int, num_layers: int) -> int:
    absolute = layer % num_layers
    if absolute not in head_layers:
        raise KeyError(f"heads of layer {layer} not stored; stored layers: {head_layers}")
    return head_layers.index(absolute)


ARRAY_FIELDS = ("embed", "mlps", "attns", "heads", "embedding")


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def write_head_contributions(
    batches: Iterable[tuple[Sequence[str], torch.Tensor]],
    model: torch.nn.Module | LoadedModel,
    out_dir: str | os.PathLike,
    layers: int | None = 4,
    dtype: Literal["float16", "float32"] = "float16",
    rows_per_shard: int = 4096,
) -> "ContributionStore":
    """Decompose every batch of (ids, normalised images) and write the terms to ``out_dir``.

    Per shard k: ``{field}-{k:05d}.npy`` for each array field of :class:`Contributions` (heads
    of the last ``layers`` layers, None = all); at the end ``index.parquet`` (id, shard, row)
    and ``meta.json``. Memory is bounded by ``rows_per_shard`` plus one batch, not by the
    number of images.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pending: list[Contributions] = []
    index_parts: list[pd.DataFrame] = []
    shard = 0
    meta: dict = {}

    def flush() -> None:
        nonlocal shard
        block = Contributions.concatenate(pending)
        for name in ARRAY_FIELDS:
            _save_npy(out / f"{name}-{shard:05d}.npy", getattr(block, name))
        index_parts.append(pd.DataFrame({"id": block.ids.astype(str), "shard": shard, "row": np.arange(len(block))}))
        pending.clear()
        shard += 1

    for ids, images in batches:
        result = decompose(model, images)
        part = Contributions.from_decomposition(ids, result, layers, dtype)
        meta = {
            "format": STORE_FORMAT,
            "dtype": dtype,
            "num_layers": int(result.mlps.shape[1]),
            "num_heads": int(result.heads.shape[2]),
            "dim": int(result.embed.shape[1]),
            "head_layers": list(part.head_layers),
            "grid_size": list(result.grid_size),
        }
        pending.append(part)
        if sum(len(p) for p in pending) >= rows_per_shard:
            flush()
    if pending:
        flush()
    if not index_parts:
        raise ValueError("no batches to decompose")
    index = pd.concat(index_parts, ignore_index=True)
    if index["id"].duplicated().any():
        raise ValueError("image ids must be unique")
    meta.update(num_images=len(index), num_shards=shard)
    tmp = out / ".index.parquet.tmp"
    index.to_parquet(tmp, index=False)
    os.replace(tmp, out / "index.parquet")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return ContributionStore(out)


class ContributionStore:
    """Read access to a directory written by :func:`write_head_contributions` (memory-mapped)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.meta = json.loads((self.root / "meta.json").read_text())
        if self.meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{self.root} is not a {STORE_FORMAT} store")
        self.index = pd.read_parquet(self.root / "index.parquet")
        self.head_layers = tuple(self.meta["head_layers"])

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_layers(self) -> int:
        return self.meta["num_layers"]

    @property
    def num_heads(self) -> int:
        return self.meta["num_heads"]

    @property
    def ids(self) -> np.ndarray:
        """Image ids in store order [M]."""
        return self.index["id"].to_numpy()

    def _array(self, name: str, shard: int) -> np.ndarray:
        return np.load(self.root / f"{name}-{shard:05d}.npy", mmap_mode="r")

    def chunks(self) -> Iterator[Contributions]:
        """One :class:`Contributions` per shard, in store order (float arrays memory-mapped)."""
        for shard, rows in self.index.groupby("shard", sort=True):
            arrays = {name: self._array(name, shard) for name in ARRAY_FIELDS}
            yield Contributions(ids=rows["id"].to_numpy(), head_layers=self.head_layers, **arrays)

    def load(self) -> Contributions:
        """All rows in memory."""
        return Contributions.concatenate(list(self.chunks()))

    def head_matrix(self, layer: int, head: int) -> np.ndarray:
        """Contributions of one head over all images, float32 [M, D] (reads only that slice)."""
        position = _head_position(self.head_layers, layer, self.num_layers)
        shards = range(self.meta["num_shards"])
        return np.concatenate([self._array("heads", s)[:, position, head] for s in shards]).astype(np.float32)


# --------------------------------------------------------------------------- mean ablation


class Term(NamedTuple):
    """A set of terms to mean-ablate: ('embed',), ('mlp', l), ('attn', l) or ('head', l, h)."""

    kind: Literal["embed", "mlp", "attn", "head"]
    layer: int | None = None
    head: int | None = None


def _term_values(chunk: Contributions, term: Term) -> np.ndarray:
    """The [M, D] values of one term in a chunk, as float32."""
    if term.kind == "embed":
        values = chunk.embed
    elif term.kind == "mlp":
        values = chunk.mlps[:, term.layer]
    elif term.kind == "attn":
        values = chunk.attns[:, term.layer]
    elif term.kind == "head":
        values = chunk.heads[:, chunk.head_index(term.layer), term.head]
    else:
        raise ValueError(f"term kind {term.kind!r} unknown; valid: embed, mlp, attn, head")
    return np.asarray(values, dtype=np.float32)


def _dataset_means(source: Contributions | ContributionStore) -> Contributions:
    """Dataset means of every stored term, as a one-row :class:`Contributions` (float64)."""
    sums, count, head_layers = None, 0, ()
    for chunk in source.chunks():
        part = {name: np.asarray(getattr(chunk, name), dtype=np.float64).sum(0, keepdims=True) for name in ARRAY_FIELDS}
        sums = part if sums is None else {name: sums[name] + part[name] for name in ARRAY_FIELDS}
        count += len(chunk)
        head_layers = chunk.head_layers
    return Contributions(ids=np.array(["mean"], dtype=object), head_layers=head_layers, **{k: v / count for k, v in sums.items()})


def _distinct_terms(ablate: Sequence[Term], num_layers: int) -> list[Term]:
    """Terms with absolute layer indices, each once; a head may not be ablated with its layer."""
    terms = list(dict.fromkeys(
        Term(t.kind, None if t.layer is None else t.layer % num_layers, t.head) for t in (Term(*term) for term in ablate)
    ))
    attn_layers = {t.layer for t in terms if t.kind == "attn"}
    if any(t.kind == "head" and t.layer in attn_layers for t in terms):
        raise ValueError("a head and the whole attention of its layer cannot be ablated together")
    return terms


def _check_labels(source: Contributions | ContributionStore, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (len(source),):
        raise ValueError(f"labels must have shape ({len(source)},) in store order; got {labels.shape}")
    return labels


def mean_ablation_accuracy(
    source: Contributions | ContributionStore,
    labels: np.ndarray,
    class_embeddings: np.ndarray | torch.Tensor,
    ablate: Sequence[Term] = (),
) -> float:
    """Zero-shot top-1 accuracy when the terms ``ablate`` are replaced by their dataset mean.

    ``labels [M]`` are class indices in store order, ``class_embeddings [C, D]`` the normalised
    class text embeddings. The prediction is ``argmax_c (sum of terms) . t_c`` (the image norm
    does not change the argmax). With ``ablate=()`` this is the un-ablated accuracy.
    """
    labels = _check_labels(source, labels)
    text = np.asarray(class_embeddings, dtype=np.float32)
    means = _dataset_means(source) if ablate else None
    ablate = _distinct_terms(ablate, means.num_layers) if ablate else []
    correct, offset = 0, 0
    for chunk in source.chunks():
        image = chunk.total()
        for term in ablate:
            image += _term_values(means, term) - _term_values(chunk, term)
        predictions = (image @ text.T).argmax(1)
        correct += int((predictions == labels[offset : offset + len(chunk)]).sum())
        offset += len(chunk)
    return correct / len(labels)


def mean_ablation_tables(
    source: Contributions | ContributionStore,
    labels: np.ndarray,
    class_embeddings: np.ndarray | torch.Tensor,
    block_rows: int = 256,
) -> pd.DataFrame:
    """Accuracy under mean-ablation of every single term and of cumulative layer sets.

    Columns: ``ablation`` (none | embed | attn | mlp | head | attn_upto | mlp_upto | all_upto),
    ``layer``, ``head`` (-1 where not applicable), ``accuracy``. ``*_upto`` rows at layer l ablate
    layers 0..l (attention, MLP, or both). ``head`` rows cover the stored head layers. One pass
    over the store for the means and one for the accuracies, all ablations at once per block
    of ``block_rows`` images (memory: block_rows x ablations x classes floats).
    """
    labels = _check_labels(source, labels)
    text = np.asarray(class_embeddings, dtype=np.float32)
    means = _dataset_means(source)
    num_layers = means.num_layers
    rows: list[tuple[str, int, int]] = [("none", -1, -1), ("embed", -1, -1)]
    rows += [(kind, layer, -1) for kind in ("attn", "mlp", "attn_upto", "mlp_upto", "all_upto") for layer in range(num_layers)]
    rows += [("head", layer, head) for layer in means.head_layers for head in range(means.num_heads)]
    correct = np.zeros(len(rows), dtype=np.int64)
    mean_logits = {name: np.asarray(getattr(means, name), dtype=np.float32) @ text.T for name in ("embed", "mlps", "attns", "heads")}
    offset = 0
    for chunk in (block for part in source.chunks() for block in part.chunks(block_rows)):
        truth = labels[offset : offset + len(chunk)]
        offset += len(chunk)
        base = chunk.total() @ text.T  # [M, C]
        # logit change when a term is replaced by its mean: (mean - value) . t_c
        embed_delta = mean_logits["embed"] - np.asarray(chunk.embed, np.float32) @ text.T  # [M, C]
        attn_delta = mean_logits["attns"] - np.asarray(chunk.attns, np.float32) @ text.T  # [M, L, C]
        mlp_delta = mean_logits["mlps"] - np.asarray(chunk.mlps, np.float32) @ text.T
        head_delta = mean_logits["heads"] - np.asarray(chunk.heads, np.float32) @ text.T  # [M, n, H, C]
        variants = [
            base[:, None],
            (base + embed_delta)[:, None],
            base[:, None] + attn_delta,
            base[:, None] + mlp_delta,
            base[:, None] + np.cumsum(attn_delta, axis=1),
            base[:, None] + np.cumsum(mlp_delta, axis=1),
            base[:, None] + np.cumsum(attn_delta + mlp_delta, axis=1),
            base[:, None] + head_delta.reshape(len(chunk), -1, text.shape[0]),
        ]
        logits = np.concatenate(variants, axis=1)  # [M, rows, C]
        correct += (logits.argmax(-1) == truth[:, None]).sum(0)
    table = pd.DataFrame(rows, columns=["ablation", "layer", "head"])
    table["accuracy"] = correct / len(labels)
    return table
