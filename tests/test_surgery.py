"""CLIP Surgery: architecture surgery against literal re-implementations of the spec, feature
surgery, map rendering, text-to-points and the batched explain() entry point (random weights)."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from cliplens.explain.surgery import (
    attention_pool_tokens,
    class_weights,
    explain,
    feature_surgery,
    image_tokens,
    image_tokens_and_grid,
    raw_similarity,
    render_maps,
    single_prompt_surgery,
    surgery_block,
    text_to_points,
)
from cliplens.maps import segment
from cliplens.models import create_tiny_clip
from cliplens.text import TEMPLATE_SETS
from cliplens.towers import residual_block, resize_positional_embedding, resnet_features

ATOL = 1e-5


def small_vit(patch_size: int = 16, image_size: int = 224, ls_init_value: float | None = None) -> torch.nn.Module:
    """A 3-block, 4-head open_clip ViT (width 64) with the given patch size, seeded, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = open_clip.model.CLIP(
            embed_dim=32,
            vision_cfg=dict(
                layers=3,
                width=64,
                head_width=16,
                patch_size=patch_size,
                image_size=image_size,
                ls_init_value=ls_init_value,
            ),
            text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
            quick_gelu=True,
        )
    return model.eval()


@pytest.fixture(scope="module")
def tiny_vit() -> torch.nn.Module:
    return create_tiny_clip("vit", seed=0)


@pytest.fixture(scope="module")
def tiny_rn() -> torch.nn.Module:
    return create_tiny_clip("resnet", seed=0)


def random_images(batch: int, height: int = 224, width: int | None = None, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width or height, generator=generator)


def random_unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def literal_vv_attention(
    x: torch.Tensor,
    value_weight: torch.Tensor,
    value_bias: torch.Tensor,
    heads: int,
    out_proj: torch.nn.Module,
    normalise: bool = False,
    scale_factor: float = 1.0,
) -> torch.Tensor:
    """softmax(s V V^T) V per head, one head at a time (s = head_dim^-0.5 * scale_factor)."""
    values = x @ value_weight.T + value_bias
    outputs = []
    for v in values.chunk(heads, dim=-1):
        key = v / v.norm(dim=-1, keepdim=True) if normalise else v
        weights = torch.softmax(key @ key.transpose(1, 2) * v.shape[-1] ** -0.5 * scale_factor, dim=-1)
        outputs.append(weights @ v)
    return out_proj(torch.cat(outputs, dim=-1))


def literal_vit_surgery(model: torch.nn.Module, images: torch.Tensor, depth: int) -> torch.Tensor:
    """The spec, literally, at the native input size: stock blocks for the original path."""
    visual = model.visual
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    blocks = visual.transformer.resblocks
    x_new = None
    for index, block in enumerate(blocks):
        if index >= len(blocks) - depth:
            width = x.shape[-1]
            update = literal_vv_attention(
                block.ln_1(x),
                block.attn.in_proj_weight[2 * width :],
                block.attn.in_proj_bias[2 * width :],
                block.attn.num_heads,
                block.attn.out_proj,
            )
            x_new = (x if x_new is None else x_new) + block.ls_1(update)
        x = block(x)
    tokens = x if x_new is None else torch.cat([x[:, :1], x_new[:, 1:]], dim=1)
    return visual.ln_post(tokens) @ visual.proj


# --------------------------------------------------------------------------- architecture surgery


@pytest.mark.parametrize("depth", [0, 1, 2, 4])
def test_vit_surgery_cls_equals_encode_image(tiny_vit, depth):
    images = random_images(2)
    with torch.no_grad():
        tokens = image_tokens(tiny_vit, images, surgery_depth=depth)
        torch.testing.assert_close(tokens[:, 0], tiny_vit.encode_image(images), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("depth", [0, 1])
def test_resnet_surgery_pooled_equals_encode_image(tiny_rn, depth):
    """The paper's variant keeps the stock attention for the pooled token (the released code's does not)."""
    images = random_images(2)
    with torch.no_grad():
        tokens = image_tokens(tiny_rn, images, surgery_depth=depth, resnet_surgery="paper")
        expected = tiny_rn.encode_image(images)
    assert tokens.shape == (2, 1 + 7 * 7, 64)
    torch.testing.assert_close(tokens[:, 0], expected, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_vit_surgery_matches_literal_spec(tiny_vit, depth):
    images = random_images(2)
    with torch.no_grad():
        expected = literal_vit_surgery(tiny_vit, images, depth)
        tokens = image_tokens(tiny_vit, images, surgery_depth=depth)
        torch.testing.assert_close(tokens, expected, atol=ATOL, rtol=1e-5)
        assert not torch.allclose(tokens[:, 1:], image_tokens(tiny_vit, images, 0)[:, 1:], atol=1e-3)


def test_depth_zero_is_raw_clip(tiny_vit):
    """k = 0 tokens equal open_clip's own last-layer tokens; raw maps equal surgery depth 0 without feature surgery."""
    images, text = random_images(2), random_unit(3, 64)
    visual = tiny_vit.visual
    with torch.no_grad():
        stock = visual.forward_intermediates(
            images,
            indices=[len(visual.transformer.resblocks) - 1],
            normalize_intermediates=True,
            output_fmt="NLC",
            output_extra_tokens=True,
            intermediates_only=True,
        )
        stock_tokens = torch.cat([stock["image_intermediates_prefix"][0], stock["image_intermediates"][0]], 1)
        stock_tokens = stock_tokens @ visual.proj
        torch.testing.assert_close(image_tokens(tiny_vit, images, surgery_depth=0), stock_tokens, atol=ATOL, rtol=0)
    stock_maps = render_maps(raw_similarity(F.normalize(stock_tokens, dim=-1), text), (7, 7), (224, 224))
    raw_maps = explain(tiny_vit, images, text, method="raw")
    torch.testing.assert_close(raw_maps, stock_maps, atol=ATOL, rtol=0)
    depth_zero = explain(tiny_vit, images, text, method="surgery", depth=0, feature_surgery_mode="off")
    torch.testing.assert_close(depth_zero, raw_maps, atol=0, rtol=0)


@pytest.mark.parametrize("ls_init_value", [None, 0.3])
def test_recomputed_blocks_match_stock_resblock(ls_init_value):
    model = small_vit(ls_init_value=ls_init_value)
    x = torch.randn(2, 1 + 14 * 14, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            torch.testing.assert_close(residual_block(block, x), block(x), atol=ATOL, rtol=1e-5)
            torch.testing.assert_close(residual_block(block, x, queries=slice(0, 1)), block(x)[:, :1], atol=ATOL, rtol=1e-5)
            original_path, vv_update = surgery_block(block, x)
            torch.testing.assert_close(original_path, block(x), atol=ATOL, rtol=1e-5)
            cls_only, _ = surgery_block(block, x, slice(0, 1))
            torch.testing.assert_close(cls_only, block(x)[:, :1], atol=ATOL, rtol=1e-5)
            expected = block.ls_1(
                literal_vv_attention(
                    block.ln_1(x),
                    block.attn.in_proj_weight[128:],
                    block.attn.in_proj_bias[128:],
                    4,
                    block.attn.out_proj,
                )
            )
            torch.testing.assert_close(vv_update, expected[:, 1:], atol=ATOL, rtol=1e-5)


def test_resnet_attention_pool_matches_literal_spec(tiny_rn):
    images = random_images(2)
    pool = tiny_rn.visual.attnpool
    with torch.no_grad():
        features = resnet_features(tiny_rn.visual, images)
        x = features.flatten(2).transpose(1, 2)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + pool.positional_embedding
        expected = literal_vv_attention(
            x, pool.v_proj.weight, pool.v_proj.bias, pool.num_heads, pool.c_proj, normalise=True, scale_factor=8.0
        )
        tokens = attention_pool_tokens(pool, features, surgery="paper")
        torch.testing.assert_close(tokens[:, 1:], expected[:, 1:], atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(tokens[:, 0], pool(features), atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("patch_size", [16, 32])
@pytest.mark.parametrize("image_hw", [(224, 224), (336, 336), (448, 448), (224, 320)])
def test_vit_shapes_at_any_input_size(patch_size, image_hw):
    model = small_vit(patch_size=patch_size)
    images = random_images(2, *image_hw)
    grid_hw = (image_hw[0] // patch_size, image_hw[1] // patch_size)
    with torch.no_grad():
        tokens, grid = image_tokens_and_grid(model, images, surgery_depth=2)
    assert grid == grid_hw
    assert tokens.shape == (2, 1 + grid_hw[0] * grid_hw[1], 32)
    assert tokens.isfinite().all()
    maps = explain(model, images, random_unit(3, 32), depth=2)
    assert maps.shape == (2, 3, *image_hw)


def test_vit_native_size_from_create_tiny_clip_image_size():
    model = create_tiny_clip("vit", seed=0, image_size=448)
    images = random_images(1, 448)
    with torch.no_grad():
        tokens = image_tokens(model, images)
        torch.testing.assert_close(tokens[:, 0], model.encode_image(images), atol=ATOL, rtol=1e-5)
    assert tokens.shape == (1, 1 + 14 * 14, 64)


@pytest.mark.parametrize("image_hw", [(224, 224), (448, 448), (256, 320)])
def test_resnet_shapes_at_any_input_size(tiny_rn, image_hw):
    images = random_images(1, *image_hw)
    with torch.no_grad():
        tokens, grid = image_tokens_and_grid(tiny_rn, images, surgery_depth=1)
    assert grid == (image_hw[0] // 32, image_hw[1] // 32)
    assert tokens.shape == (1, 1 + grid[0] * grid[1], 64)
    assert explain(tiny_rn, images, random_unit(2, 64)).shape == (1, 2, *image_hw)


def test_resize_positional_embedding():
    embedding = torch.randn(1 + 7 * 7, 8)
    assert resize_positional_embedding(embedding, (7, 7), (7, 7)) is embedding
    constant = torch.cat([torch.zeros(1, 8), torch.ones(49, 8) * torch.arange(8.0)], dim=0)
    resized = resize_positional_embedding(constant, (7, 7), (10, 14))
    assert resized.shape == (1 + 10 * 14, 8)
    torch.testing.assert_close(resized[1:], torch.ones(140, 8) * torch.arange(8.0))


def test_depth_beyond_the_blocks_means_all_blocks_and_negative_depth_is_rejected(tiny_vit):
    images = random_images(1)
    with torch.no_grad():
        torch.testing.assert_close(image_tokens(tiny_vit, images, 6), image_tokens(tiny_vit, images, 4))
    with pytest.raises(ValueError, match="surgery_depth"):
        image_tokens(tiny_vit, images, surgery_depth=-1)


# --------------------------------------------------------------------------- feature surgery


def test_feature_surgery_equals_elementwise_definition():
    tokens, text = random_unit(2, 5, 16, seed=1), random_unit(4, 16, seed=2)
    weights = (2 * tokens[:, 0] @ text.T).softmax(-1)
    weights = weights / weights.mean(-1, keepdim=True)
    features = tokens[:, :, None, :] * text[None, None] * weights[:, None, :, None]  # [B, N, C, D]
    expected = (features - features.mean(dim=2, keepdim=True)).sum(-1)
    torch.testing.assert_close(feature_surgery(tokens, text), expected, atol=1e-6, rtol=1e-5)


def test_feature_surgery_memory_is_b_n_c():
    """B=2, N=785, C=1000, D=512 would need 3.2 GB as a [B, N, C, D] product; no allocation here is
    larger than the [B, N, C] result (6 MB), as torch's profiler records them."""
    from torch.profiler import ProfilerActivity, profile

    tokens, text = random_unit(2, 785, 512, seed=1), random_unit(1000, 512, seed=2)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        result = feature_surgery(tokens, text)
    assert result.shape == (2, 785, 1000)
    largest = max(event.cpu_memory_usage for event in recorded.events())
    assert 0 < largest <= result.numel() * result.element_size()


def test_shift_invariance_of_single_prompt_surgery_and_its_negative_control():
    """Invariant: adding one vector v to every text t_c and to t_empty leaves every single-prompt map
    S_jc = f_j . (t_c - t_empty) unchanged, so each label's ranking of the patches is unchanged.
    Negative control: the same shift re-ranks the patches of raw cosine maps f_j . t_c."""
    tokens, text, empty = random_unit(2, 50, 32, seed=1), random_unit(3, 32, seed=2), random_unit(32, seed=3)
    shift = 2.0 * random_unit(32, seed=4)
    before = single_prompt_surgery(tokens, text, empty)
    after = single_prompt_surgery(tokens, text + shift, empty + shift)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert torch.equal(before[:, 1:].argsort(dim=1), after[:, 1:].argsort(dim=1))
    raw_before, raw_after = raw_similarity(tokens, text), raw_similarity(tokens, text + shift)
    assert not torch.equal(raw_before[:, 1:].argsort(dim=1), raw_after[:, 1:].argsort(dim=1))


def test_shift_of_label_set_surgery():
    """Adding v to every t_c keeps the class weights w (softmax is shift-invariant) and thus the
    CLS label ranking, and moves S_jc by exactly (w_c - 1) f_j . v: S is unchanged where the
    weights are uniform, and without the weights (w = 1) it would be unchanged everywhere."""
    tokens, text = random_unit(2, 50, 32, seed=1), random_unit(4, 32, seed=2)
    shift = 0.5 * random_unit(32, seed=4)
    weights = class_weights(tokens[:, 0], text)
    torch.testing.assert_close(class_weights(tokens[:, 0], text + shift), weights)
    assert torch.equal((tokens[:, 0] @ text.T).argsort(-1), (tokens[:, 0] @ (text + shift).T).argsort(-1))
    change = feature_surgery(tokens, text + shift) - feature_surgery(tokens, text)
    expected = (weights[:, None, :] - 1) * (tokens @ shift)[:, :, None]
    torch.testing.assert_close(change, expected, atol=1e-6, rtol=1e-5)
    assert change.abs().max() > 1e-3


# --------------------------------------------------------------------------- maps and points


def test_render_maps_minmax_per_image_and_label():
    similarity = torch.randn(2, 1 + 3 * 4, 5)
    similarity[:, 0] = 100.0  # the class token never enters the map
    maps = render_maps(similarity, (3, 4), (3, 4))
    assert maps.shape == (2, 5, 3, 4)
    torch.testing.assert_close(maps.amin(dim=(2, 3)), torch.zeros(2, 5))
    torch.testing.assert_close(maps.amax(dim=(2, 3)), torch.ones(2, 5))
    torch.testing.assert_close(maps[1, 2].flatten().argsort(), similarity[1, 1:, 2].argsort())
    assert render_maps(similarity, (3, 4), (30, 40)).shape == (2, 5, 30, 40)
    assert render_maps(torch.ones(1, 13, 2), (3, 4), (3, 4)).eq(0).all()
    with pytest.raises(ValueError):
        render_maps(similarity, (4, 4), (8, 8))


def test_segment_is_argmax_over_labels():
    maps = torch.rand(2, 4, 8, 8)
    labels = segment(maps)
    assert labels.shape == (2, 8, 8)
    assert torch.equal(maps.gather(1, labels[:, None]).squeeze(1), maps.amax(1))


def test_text_to_points_properties():
    yy, xx = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    saliency = torch.exp(-((yy - 3) ** 2 + (xx - 10) ** 2) / 8) + 0.01 * torch.rand(14, 14)
    positives, negatives = text_to_points(saliency, out_hw=(224, 224))
    cells = F.interpolate(saliency[None, None], size=(7, 7), mode="bilinear")[0, 0]
    cells = (cells - cells.min()) / (cells.max() - cells.min())
    assert positives.shape == negatives.shape and positives.shape[1] == 2
    assert 1 <= len(positives) <= (cells >= 0.8).sum() and len(positives) <= 49 // 2
    assert ((positives >= 0) & (positives <= 223)).all() and ((negatives >= 0) & (negatives <= 223)).all()
    values = lambda points: cells[points[:, 1] // 32, points[:, 0] // 32]  # noqa: E731
    assert (values(positives) >= 0.8).all()
    assert values(negatives).max() <= values(positives).min()
    assert torch.equal(values(negatives), values(negatives).sort().values)
    assert torch.equal(positives[0], torch.tensor([10 // 2 * 32 + 16, 3 // 2 * 32 + 16]))
    assert not set(map(tuple, positives.tolist())) & set(map(tuple, negatives.tolist()))


def test_text_to_points_caps_at_half_the_cells_and_handles_flat_maps():
    cells = torch.ones(4, 4).triu()  # 10 of the 16 cells are 1, the rest 0
    positives, negatives = text_to_points(cells.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert len(positives) == len(negatives) == 8
    positives, negatives = text_to_points(torch.ones(8, 8))
    assert positives.shape == negatives.shape == (0, 2)


# --------------------------------------------------------------------------- explain


def test_explain_is_batch_independent_and_normalised(tiny_vit):
    images, text = random_images(3), random_unit(4, 64)
    maps = explain(tiny_vit, images, text)
    assert maps.shape == (3, 4, 224, 224) and maps.isfinite().all()
    assert maps.amin() >= 0 and maps.amax() <= 1
    torch.testing.assert_close(explain(tiny_vit, images[1:2], text), maps[1:2], atol=ATOL, rtol=0)


def test_explain_modes(tiny_vit):
    images, text, empty = random_images(2), random_unit(3, 64), random_unit(64, seed=5)
    with torch.no_grad():
        tokens, grid = image_tokens_and_grid(tiny_vit, images, surgery_depth=3)
    tokens = F.normalize(tokens, dim=-1)
    label_set = explain(tiny_vit, images, text, depth=3, out_hw=grid)
    torch.testing.assert_close(label_set, render_maps(feature_surgery(tokens, text), grid, grid), atol=ATOL, rtol=0)
    single = explain(tiny_vit, images, text, empty, depth=3, out_hw=grid, feature_surgery_mode="single_prompt")
    expected = render_maps(single_prompt_surgery(tokens, text, empty), grid, grid)
    torch.testing.assert_close(single, expected, atol=ATOL, rtol=0)
    one_prompt = explain(tiny_vit, images, text[:1], empty, depth=3, out_hw=grid)
    torch.testing.assert_close(one_prompt, single[:, :1], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="empty_feature"):
        explain(tiny_vit, images, text[:1])
    with pytest.raises(ValueError, match="two texts"):
        explain(tiny_vit, images, text[:1], empty, feature_surgery_mode="label_set")
    with pytest.raises(ValueError, match="unknown"):
        explain(tiny_vit, images, text, method="gradcam")


def test_clip_surgery_templates():
    templates = TEMPLATE_SETS["clip_surgery"]
    assert len(templates) == len(set(templates)) == 85
    assert templates[:80] == TEMPLATE_SETS["openai_imagenet"]
    assert all(template.count("{}") == 1 for template in templates)
