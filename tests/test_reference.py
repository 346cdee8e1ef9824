"""The defaults reproduce the authors' released code: TEXTSPAN selection (clip_text_span), the split
of ln_post's constant part (its prs_hook) and the ResNet attention pool of CLIP Surgery.

Each test re-implements the released behaviour from its description in docs/methods.md
(section 1.1), on seeded random weights whose biases and normalisation parameters are all
perturbed away from their constant initial values, and compares cliplens' default with it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from cliplens.explain.surgery import explain, image_tokens, render_maps
from cliplens.interpret.decompose import Decomposition, decompose
from cliplens.interpret.textspan import textspan
from cliplens.models import create_tiny_clip

LAYERS, HEADS = 3, 4


def perturb(parameter: torch.Tensor, generator: torch.Generator, scale: float = 0.3) -> None:
    """Add seeded Gaussian noise in place."""
    parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


@pytest.fixture(scope="module")
def vit_tower() -> VisionTransformer:
    """A stock open_clip ViT tower without LayerScale (the released code has none), every bias,
    LayerNorm parameter and embedding perturbed."""
    torch.manual_seed(2)
    tower = VisionTransformer(
        image_size=64, patch_size=16, width=64, layers=LAYERS, heads=HEADS, mlp_ratio=2.0, ls_init_value=None, output_dim=32
    ).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in tower.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith(("ln_", "class_", "positional_")):
                perturb(parameter, generator)
    return tower


@pytest.fixture(scope="module")
def vit_images() -> torch.Tensor:
    return torch.randn(48, 3, 64, 64, generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def decompositions(vit_tower, vit_images) -> dict[str, Decomposition]:
    return {
        split: decompose(vit_tower, vit_images, tokens=True, last_layers=LAYERS, constant_split=split)
        for split in ("reference", "uniform")
    }


# --------------------------------------------------------------------------- the constant split


def released_terms(tower: VisionTransformer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The released projected-residual-stream terms, re-implemented from their description.

    Each of the 2L + 1 layer outputs (ln_pre output, L attention outputs, L MLP outputs) at CLS
    carries 1/(2L+1) of mu and b; an attention layer's CLS output is split into N x H pieces
    a_0j v_j W_O^h + b_O / (N H), each carrying 1/((2L+1) N H). A piece c with share s maps to
    (g (c - s mu) / sigma + s b) P / |e|, sigma = sqrt(E[r^2] - mu^2 + eps).
    """
    blocks = tower.transformer.resblocks
    seen: dict = {}
    hooks = [
        block.register_forward_pre_hook(lambda _m, args, i=i: seen.__setitem__(i, args[0])) for i, block in enumerate(blocks)
    ]
    hooks += [
        block.mlp.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(("mlp", i), out))
        for i, block in enumerate(blocks)
    ]
    hooks.append(tower.ln_pre.register_forward_hook(lambda _m, _a, out: seen.__setitem__("pre", out)))
    hooks.append(tower.ln_post.register_forward_pre_hook(lambda _m, args: seen.__setitem__("post", args[0])))
    with torch.no_grad():
        output = tower(x)
        for hook in hooks:
            hook.remove()
        residual = seen["post"][:, 0]
        mu = residual.mean(-1, keepdim=True)
        sigma = ((residual**2).mean(-1, keepdim=True) - mu**2 + tower.ln_post.eps).sqrt()
        norm = output.norm(dim=-1, keepdim=True)
        outputs = 2 * len(blocks) + 1

        def project(term: torch.Tensor, share: float) -> torch.Tensor:
            view = (-1,) + (1,) * (term.dim() - 1)
            centred = term - share * mu.reshape(view)
            return (
                (tower.ln_post.weight * centred / sigma.reshape(view) + share * tower.ln_post.bias)
                @ tower.proj
                / norm.reshape(view)
            )

        pieces = []
        for index, block in enumerate(blocks):
            normed = block.ln_1(seen[index])
            _, weights = block.attn(normed, normed, normed, need_weights=True, average_attn_weights=False)  # [B, H, N, N]
            width = normed.shape[-1]
            values = F.linear(normed, block.attn.in_proj_weight[2 * width :], block.attn.in_proj_bias[2 * width :])
            values = values.unflatten(-1, (HEADS, -1))  # [B, N, H, dh]
            out_weight = block.attn.out_proj.weight.unflatten(1, (HEADS, -1))  # [W, H, dh]
            tokens = values.shape[1]
            piece = torch.einsum("bhj,bjhc,whc->bjhw", weights[:, :, 0], values, out_weight)
            piece = piece + block.attn.out_proj.bias / (tokens * HEADS)
            pieces.append(project(piece, 1.0 / (outputs * tokens * HEADS)))  # [B, N, H, D]
        mlps = torch.stack([project(seen[("mlp", i)][:, 0], 1.0 / outputs) for i in range(len(blocks))], dim=1)
        return {
            "pieces": torch.stack(pieces, dim=1),  # [B, L, N, H, D]
            "mlps": mlps,
            "embed": project(seen["pre"][:, 0], 1.0 / outputs),
            "embedding": F.normalize(output, dim=-1),
        }


def test_reference_split_equals_the_released_terms(vit_tower, vit_images, decompositions):
    expected = released_terms(vit_tower, vit_images)
    result = decompositions["reference"]
    pieces = expected["pieces"]
    torch.testing.assert_close(result.head_tokens, pieces.transpose(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.heads, pieces.sum(dim=2), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.attns, pieces.sum(dim=(2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.mlps, expected["mlps"], atol=1e-6, rtol=0)
    torch.testing.assert_close(result.embed, expected["embed"], atol=1e-6, rtol=0)
    # the check can fail: the uniform split moves every per-head term by far more than 1e-6
    uniform = decompositions["uniform"]
    assert (uniform.heads - result.heads).abs().max() > 1e-4
    assert (uniform.head_tokens - result.head_tokens).abs().max() > 1e-5


@pytest.mark.parametrize("split", ["reference", "uniform"])
def test_both_splits_are_complete(vit_tower, vit_images, decompositions, split):
    result = decompositions[split]
    with torch.no_grad():
        expected = F.normalize(vit_tower(vit_images), dim=-1)
    torch.testing.assert_close(result.total(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.head_tokens.sum(dim=3), result.heads, atol=1e-6, rtol=0)


def test_unknown_constant_split_is_rejected(vit_tower, vit_images):
    with pytest.raises(ValueError, match="constant_split"):
        decompose(vit_tower, vit_images[:1], constant_split="even")


# --------------------------------------------------------------------------- TEXTSPAN


def released_textspan(data: np.ndarray, texts: np.ndarray, iters: int, rank: int) -> tuple[list[int], np.ndarray]:
    """The released greedy removal, re-implemented from its description: texts projected onto the
    top-``rank`` right singular vectors of the uncentred data, then the data centred; each step
    takes the text with the largest standard deviation of (data @ text), with the texts as they
    are (never re-normalised), and removes its direction from the data and from every text.

    Returns the chosen indices and the explained-variance ratio of the accumulated
    reconstruction after each step (the variance of what was projected out over that of the
    centred data).
    """
    _, _, right = np.linalg.svd(data, full_matrices=False)
    span = right[:rank]
    texts = texts @ span.T @ span
    centred = data - data.mean(axis=0)
    total = centred.var(axis=0).sum()
    reconstruction = np.zeros_like(centred)
    chosen, ratios = [], []
    for _ in range(iters):
        best = int(np.argmax((centred @ texts.T).std(axis=0, ddof=1)))
        text = texts[best]
        removed = np.outer(centred @ text / (text @ text), text)
        reconstruction += removed
        centred = centred - removed
        texts = texts - np.outer(texts @ text / (text @ text), text)
        chosen.append(best)
        ratios.append(reconstruction.var(axis=0).sum() / total)
    return chosen, np.asarray(ratios)


@pytest.fixture(scope="module")
def text_pool() -> np.ndarray:
    pool = np.random.default_rng(5).normal(size=(300, 32))
    return pool / np.linalg.norm(pool, axis=1, keepdims=True)


@pytest.mark.parametrize(("rank", "m"), [(80, 10), (8, 5)])
def test_reference_textspan_equals_the_released_selection(decompositions, text_pool, rank, m):
    heads = decompositions["reference"].heads.double().numpy()
    differing = 0
    for layer in range(LAYERS):
        for head in range(HEADS):
            data = heads[:, layer, head]
            expected, ratios = released_textspan(data, text_pool, m, rank)
            indices, explained = textspan(data, text_pool, m=m, r=rank)
            np.testing.assert_array_equal(indices, expected)
            np.testing.assert_allclose(np.cumsum(explained), ratios, rtol=0, atol=1e-10)
            differing += not np.array_equal(textspan(data, text_pool, m=m, r=rank, criterion="normalised")[0], indices)
    assert differing >= LAYERS * HEADS // 2  # the criterion matters on most heads


# --------------------------------------------------------------------------- ResNet surgery


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    """The tiny ModifiedResNet CLIP, every BatchNorm (parameters and statistics) and every
    attention-pool bias and positional embedding perturbed. The value projection is scaled by 5:
    at its initial scale the v-v attention is nearly uniform, the maps span about 4e-4 before
    their min-max rendering, and float32 rounding of the tokens alone reaches 3e-4 in the maps."""
    model = create_tiny_clip("resnet", seed=0)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for module in model.visual.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                perturb(module.weight, generator)
                perturb(module.bias, generator)
                perturb(module.running_mean, generator, 0.1)
                module.running_var.mul_(torch.exp(0.2 * torch.randn(module.running_var.shape, generator=generator)))
        pool = model.visual.attnpool
        for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
            perturb(linear.bias, generator)
        perturb(pool.positional_embedding, generator, 0.1)
        pool.v_proj.weight.mul_(5.0)
    return model


def released_resnet_maps(model: torch.nn.Module, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The released ResNet surgery with label-set feature surgery, re-implemented from its
    description: every token of the attention pool (the mean feature first) takes q, k and v
    from the value projection, so each head computes softmax(V V^T / sqrt(d)) V; c_proj follows.
    The class weights come from that pooled token."""
    visual = model.visual
    pool = visual.attnpool
    with torch.no_grad():
        features = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
        tokens = features.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + pool.positional_embedding
        heads = []
        for v in pool.v_proj(tokens).chunk(pool.num_heads, dim=-1):
            heads.append(torch.softmax(v @ v.transpose(1, 2) / v.shape[-1] ** 0.5, dim=-1) @ v)
        features_out = F.normalize(pool.c_proj(torch.cat(heads, dim=-1)), dim=-1)
    probabilities = torch.softmax(2 * features_out[:, 0] @ text.T, dim=-1)
    weights = probabilities / probabilities.mean(dim=-1, keepdim=True)
    products = features_out[:, :, None, :] * text[None, None] * weights[:, None, :, None]  # [B, N, C, D]
    similarity = (products - products.mean(dim=2, keepdim=True)).sum(dim=-1)
    return render_maps(similarity, features.shape[-2:], images.shape[-2:])


def test_reference_resnet_surgery_equals_the_released_maps(resnet):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    text = F.normalize(torch.randn(5, 64, generator=torch.Generator().manual_seed(8)), dim=-1)
    maps = explain(resnet, images, text, depth=1)
    torch.testing.assert_close(maps, released_resnet_maps(resnet, images, text), atol=1e-5, rtol=0)
    # the released pooled token is v-v as well, so it is not the image embedding
    with torch.no_grad():
        pooled = image_tokens(resnet, images, surgery_depth=1)[:, 0]
        assert (pooled - resnet.encode_image(images)).abs().max() > 1e-3
    assert (explain(resnet, images, text, depth=1, resnet_surgery="paper") - maps).abs().max() > 1e-2
    with pytest.raises(ValueError, match="resnet_surgery"):
        explain(resnet, images, text, resnet_surgery="released")
