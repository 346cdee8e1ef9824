"""Head-level decomposition: completeness, brute-force checks, streaming storage, mean-ablation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from cliplens.interpret.ablation import Term, mean_ablation_accuracy, mean_ablation_tables
from cliplens.interpret.contributions import Contributions, ContributionStore, write_head_contributions
from cliplens.interpret.decompose import decompose
from cliplens.models import create_tiny_clip


@pytest.fixture(scope="module")
def tiny_vit() -> torch.nn.Module:
    return create_tiny_clip("vit", seed=0)


@pytest.fixture(scope="module")
def layerscale_tower() -> torch.nn.Module:
    """A stock open_clip ViT tower with LayerScale: random gammas, LayerNorms and biases (incl. b_O)."""
    torch.manual_seed(1)
    tower = VisionTransformer(
        image_size=64, patch_size=16, width=64, layers=3, heads=4, mlp_ratio=2.0, ls_init_value=1.0, output_dim=32
    ).eval()
    with torch.no_grad():
        for name, parameter in tower.named_parameters():
            if name.endswith(("gamma", "bias")) or "ln" in name:
                parameter.copy_(parameter + 0.3 * torch.randn_like(parameter))
    return tower


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def towers(tiny_vit: torch.nn.Module, layerscale_tower: torch.nn.Module) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    return [(tiny_vit, images(3, 224)), (layerscale_tower, images(3, 64))]


def test_terms_sum_to_normalised_embedding(tiny_vit, layerscale_tower):
    for model, x in towers(tiny_vit, layerscale_tower):
        result = decompose(model, x, tokens=True)
        with torch.no_grad():
            encoded = model.encode_image(x) if hasattr(model, "encode_image") else model(x)
        expected = F.normalize(encoded, dim=-1)
        assert result.total().dtype == torch.float32
        torch.testing.assert_close(result.total(), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(result.embedding, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(result.norm, encoded.norm(dim=-1), atol=1e-4, rtol=1e-5)


def test_shapes(tiny_vit):
    result = decompose(tiny_vit, images(2, 224), tokens=True, last_layers=2)
    assert result.embed.shape == (2, 64)
    assert result.mlps.shape == (2, 4, 64)
    assert result.heads.shape == (2, 4, 4, 64)
    assert result.token_layers == (2, 3)
    assert result.head_tokens.shape == (2, 2, 4, 50, 64)
    assert result.grid_size == (7, 7)
    assert decompose(tiny_vit, images(2, 224)).head_tokens is None


def brute_force_terms(visual: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Direct terms recomputed with open_clip's own modules, ln_post frozen at the image's mu/sigma.

    Each head h of layer l: run the stock nn.MultiheadAttention on the recorded ln_1 input with
    the value projections of every other head zeroed, so only head h reaches out_proj. Its CLS
    output z_h W_O^h + b_O keeps b_O/H (the head's share of the bias), goes through ls_1, and then
    through the frozen ln_post with the head's 1/K share of mu and b (``constant_split="uniform"``),
    times P, over |e|.
    """
    blocks = visual.transformer.resblocks
    recorded: dict = {}
    handles = [
        block.register_forward_pre_hook(lambda _m, args, i=i: recorded.__setitem__(i, args[0])) for i, block in enumerate(blocks)
    ]
    handles += [
        block.mlp.register_forward_hook(lambda _m, _a, out, i=i: recorded.__setitem__(("mlp", i), out))
        for i, block in enumerate(blocks)
    ]
    handles.append(visual.ln_pre.register_forward_hook(lambda _m, _a, out: recorded.__setitem__("embed", out)))
    handles.append(visual.ln_post.register_forward_pre_hook(lambda _m, args: recorded.__setitem__("final", args[0])))
    with torch.no_grad():
        encoded = visual(x)
    for handle in handles:
        handle.remove()
    final = recorded["final"][:, 0]
    mu = final.mean(-1, keepdim=True)
    sigma = (final.var(-1, unbiased=False, keepdim=True) + visual.ln_post.eps).sqrt()
    gain, bias, proj = visual.ln_post.weight, visual.ln_post.bias, visual.proj
    num_layers, num_heads = len(blocks), blocks[0].attn.num_heads
    share = 1.0 / (1 + num_layers + num_layers * num_heads)
    norm = encoded.norm(dim=-1, keepdim=True)

    def frozen(term: torch.Tensor) -> torch.Tensor:
        return (gain * (term - mu * share) / sigma + bias * share) @ proj / norm

    width = visual.transformer.width
    head_dim = width // num_heads
    heads = torch.zeros(len(x), num_layers, num_heads, proj.shape[1])
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            ln_input = block.ln_1(recorded[layer])
            for head in range(num_heads):
                isolated = copy.deepcopy(block.attn)
                keep = torch.zeros(width, dtype=torch.bool)
                keep[head * head_dim : (head + 1) * head_dim] = True
                isolated.in_proj_weight[2 * width :][~keep] = 0
                isolated.in_proj_bias[2 * width :][~keep] = 0
                output = isolated(ln_input, ln_input, ln_input, need_weights=False)[0][:, 0]
                out_bias = block.attn.out_proj.bias
                heads[:, layer, head] = frozen(block.ls_1(output - out_bias + out_bias / num_heads))
        mlps = torch.stack([frozen(block.ls_2(recorded[("mlp", i)][:, 0])) for i, block in enumerate(blocks)], 1)
    return {"heads": heads, "mlps": mlps, "embed": frozen(recorded["embed"][:, 0])}


def test_terms_equal_brute_force_with_other_heads_zeroed(tiny_vit, layerscale_tower):
    for model, x in towers(tiny_vit, layerscale_tower):
        visual = getattr(model, "visual", model)
        expected = brute_force_terms(visual, x)
        result = decompose(model, x, constant_split="uniform")
        # the check can fail: heads differ from one another, so any mix-up of heads shows
        assert (expected["heads"][:, :, 0] - expected["heads"][:, :, 1]).abs().max() > 1e-3
        torch.testing.assert_close(result.heads, expected["heads"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(result.mlps, expected["mlps"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(result.embed, expected["embed"], atol=1e-5, rtol=1e-4)


def test_head_token_terms(tiny_vit, layerscale_tower):
    for model, x in towers(tiny_vit, layerscale_tower):
        result = decompose(model, x, tokens=True, last_layers=2)
        torch.testing.assert_close(
            result.head_tokens.sum(dim=3), result.heads[:, list(result.token_layers)], atol=1e-6, rtol=1e-4
        )
        # token terms of the last layer from the stock module's attention weights
        visual = getattr(model, "visual", model)
        block = visual.transformer.resblocks[-1]
        recorded = {}
        handle = block.register_forward_pre_hook(lambda _m, args: recorded.__setitem__("x", args[0]))
        with torch.no_grad():
            visual(x)
            handle.remove()
            ln_input = block.ln_1(recorded["x"])
            _, weights = block.attn(ln_input, ln_input, ln_input, need_weights=True, average_attn_weights=False)
        width, num_heads = ln_input.shape[-1], block.attn.num_heads
        values = F.linear(ln_input, block.attn.in_proj_weight[2 * width :], block.attn.in_proj_bias[2 * width :])
        values = values.reshape(*values.shape[:2], num_heads, -1)  # [B, N, H, dh]
        out_weight = block.attn.out_proj.weight.T.reshape(num_heads, width // num_heads, width)
        num_tokens = values.shape[1]
        # linear part of c_lhj (no constant shares): differences between tokens isolate it
        via_stock = torch.einsum("bhj,bjhd,hdw->bhjw", weights[:, :, 0], values, out_weight)
        gain, proj = visual.ln_post.weight, visual.proj
        sigma = _final_sigma(visual, x)
        expected = (block.ls_1(via_stock) * gain) @ proj / (sigma * result.norm)[:, None, None, None]
        ours = result.head_tokens[:, -1]
        torch.testing.assert_close(ours[:, :, 1:] - ours[:, :, :1], expected[:, :, 1:] - expected[:, :, :1], atol=1e-6, rtol=1e-4)
        assert num_tokens == 1 + visual.grid_size[0] * visual.grid_size[1]


def _final_sigma(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    recorded = {}
    handle = visual.ln_post.register_forward_pre_hook(lambda _m, args: recorded.__setitem__("final", args[0]))
    with torch.no_grad():
        visual(x)
    handle.remove()
    final = recorded["final"][:, 0]
    return (final.var(-1, unbiased=False) + visual.ln_post.eps).sqrt()


def test_rejects_resnet():
    with pytest.raises(ValueError, match="VisionTransformer"):
        decompose(create_tiny_clip("resnet", seed=0), images(1, 224))


def batches(count: int, batch: int, size: int = 224):
    for b in range(count):
        yield [f"img{b * batch + i:03d}" for i in range(batch)], images(batch, size, seed=b)


def test_write_head_contributions_roundtrip(tiny_vit, tmp_path):
    store = write_head_contributions(batches(3, 4), tiny_vit, tmp_path / "c", layers=2, dtype="float32", rows_per_shard=5)
    assert store.meta["num_shards"] == 2  # 8 rows, then 4
    assert len(store) == 12 and list(store.ids) == [f"img{i:03d}" for i in range(12)]
    loaded = ContributionStore(tmp_path / "c").load()
    expected = [decompose(tiny_vit, x) for _, x in batches(3, 4)]
    heads = torch.cat([r.heads for r in expected])
    np.testing.assert_allclose(loaded.heads, heads[:, 2:].numpy(), atol=1e-6)
    np.testing.assert_allclose(loaded.attns, heads.sum(2).numpy(), atol=1e-6)
    np.testing.assert_allclose(loaded.total(), torch.cat([r.embedding for r in expected]).numpy(), atol=1e-5)
    np.testing.assert_allclose(store.head_matrix(-1, 3), heads[:, 3, 3].numpy(), atol=1e-6)
    assert loaded.head_layers == (2, 3)


def test_write_float16(tiny_vit, tmp_path):
    store = write_head_contributions(batches(1, 3), tiny_vit, tmp_path / "h", layers=None)
    chunk = next(store.chunks())
    assert chunk.heads.dtype == np.float16 and chunk.heads.shape == (3, 4, 4, 64)
    assert np.abs(chunk.total() - chunk.embedding.astype(np.float32)).max() < 5e-3


@pytest.fixture(scope="module")
def labelled(tiny_vit) -> tuple[Contributions, np.ndarray, np.ndarray, np.ndarray]:
    result = decompose(tiny_vit, images(40, 224, seed=7))
    store = Contributions.from_decomposition([f"i{i}" for i in range(40)], result, layers=2)
    # random weights give near-identical embeddings: classes along centred embeddings separate them
    centred = result.embedding - result.embedding.mean(0)
    text = F.normalize(centred[:5], dim=-1).numpy()
    predicted = (result.embedding.numpy() @ text.T).argmax(1)
    labels = np.where(np.arange(40) % 2 == 0, predicted, (predicted + 1) % 5)  # accuracy 0.5 by construction
    return store, labels, text, result.embedding.numpy()


def test_mean_ablation_of_nothing_is_plain_accuracy(labelled):
    store, labels, text, embedding = labelled
    plain = float(((embedding @ text.T).argmax(1) == labels).mean())
    assert plain == 0.5
    assert mean_ablation_accuracy(store, labels, text) == plain
    table = mean_ablation_tables(store, labels, text, block_rows=7)
    assert table.loc[table["ablation"] == "none", "accuracy"].item() == plain


def test_mean_ablation_matches_direct_replacement(labelled):
    store, labels, text, _ = labelled
    terms = [Term("mlp", 1), Term("head", 3, 2), ("embed",)]
    replaced = store.total().copy()
    for values in (store.mlps[:, 1], store.heads[:, 1, 2], store.embed):
        replaced += values.mean(0) - values
    expected = float(((replaced @ text.T).argmax(1) == labels).mean())
    assert mean_ablation_accuracy(store, labels, text, terms) == expected
    assert expected != 0.5  # the ablation changes something
    with pytest.raises(ValueError, match="together"):
        mean_ablation_accuracy(store, labels, text, [("attn", 3), ("head", -1, 0)])


def test_mean_ablation_table_agrees_with_single_ablations(labelled, tmp_path):
    store, labels, text, _ = labelled
    table = mean_ablation_tables(store, labels, text, block_rows=16).set_index(["ablation", "layer", "head"])["accuracy"]
    assert len(table) == 2 + 5 * 4 + 2 * 4
    upto = {"attn_upto": ("attn",), "mlp_upto": ("mlp",), "all_upto": ("attn", "mlp")}
    for (ablation, layer, head), accuracy in table.items():
        if ablation in upto:
            terms = [Term(kind, earlier) for kind in upto[ablation] for earlier in range(layer + 1)]
        else:
            terms = {"none": [], "embed": [Term("embed")], "head": [Term("head", layer, head)]}.get(
                ablation, [Term(ablation, layer)]
            )
        assert accuracy == mean_ablation_accuracy(store, labels, text, terms), (ablation, layer, head)
    # the rows are not all the baseline: single heads and layer sets change the accuracy here
    assert (table.xs("head", level="ablation") != 0.5).any()
    assert (table.drop("none", level="ablation") != 0.5).sum() >= 10


def test_other_input_sizes_use_the_resized_positional_embedding(tiny_vit):
    """The decomposition runs the shared tower re-computation: a 288 x 224 input (9 x 7 patches)
    is decomposed completely, and its embedding is the class token of that re-computation."""
    from cliplens.explain.surgery import image_tokens

    batch = torch.rand(2, 3, 288, 224)
    result = decompose(tiny_vit, batch)
    assert result.grid_size == (9, 7)
    expected = F.normalize(image_tokens(tiny_vit, batch, surgery_depth=0)[:, 0].float(), dim=-1)
    torch.testing.assert_close(result.embedding, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.total(), result.embedding, atol=1e-5, rtol=1e-5)
