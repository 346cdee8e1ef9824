"""Contrastive training of the planted CLIP: deterministic on CPU, validated settings, a learning signal."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from cliplens import training
from cliplens.planted import PlantedConfig, caption, generate_split
from cliplens.training import (
    TrainingConfig,
    attribute_pairs,
    attribute_swap_negatives,
    attribute_templates,
    class_embeddings,
    contrastive_loss,
    create_planted_clip,
    lr_factor,
    train_clip,
    zero_shot_accuracies,
)

WORLD = PlantedConfig(counts={"train": 64, "test": 2, "test_shifted": 2})


@pytest.fixture(scope="module")
def world():
    images, _, records = generate_split(WORLD, "train")
    return images, records


def short_run(images, records, steps=6, **settings):
    model, tokenizer = create_planted_clip(0)
    cfg = TrainingConfig(steps=steps, batch_size=16, warmup_steps=2, eval_every=3, lr=3e-3, **settings)
    return model, train_clip(model, tokenizer, images, records, cfg, evaluate=lambda model: {"probe": 1.0})


@pytest.mark.parametrize(
    "settings", [{}, {"paired_attributes": ()}, {"hard_negatives": ("shape", "background"), "paired_attributes": ("colour",)}]
)
def test_two_runs_are_identical_and_the_loss_falls(world, settings):
    images, records = world
    model, first = short_run(images, records, **settings)
    _, second = short_run(images, records, **settings)
    assert [row["loss"] for row in first] == [row["loss"] for row in second]
    assert first[-1]["loss"] < first[0]["loss"]
    assert [row.get("probe") for row in first] == [None, None, 1.0, None, None, 1.0]
    assert not model.training


def test_training_logs_its_progress_between_evaluations(world, monkeypatch, caplog):
    monkeypatch.setattr(training, "PROGRESS_SECONDS", 0.0)  # every step a progress line
    images, records = world
    with caplog.at_level(logging.INFO, logger=training.log.name):
        short_run(images, records, steps=4)
    lines = [record.getMessage() for record in caplog.records if record.name == training.log.name]
    assert lines[0].startswith("training 4 steps of 16 images on cpu")
    progress = [line for line in lines if "of training left" in line]
    assert [line.split()[1] for line in progress] == ["1/4", "2/4"]  # steps 3 and 4 log their evaluation


def test_schedule_warms_up_then_decays_to_zero():
    cfg = TrainingConfig(steps=10, warmup_steps=2)
    factors = [lr_factor(cfg, step) for step in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[2:], factors[3:])) and factors[-1] < 0.05


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"steps": 0}, "steps"),
        ({"lr": -1.0}, "lr"),
        ({"steps": 10, "warmup_steps": 11}, "warmup_steps"),
        ({"stepz": 1}, "key"),
        ({"hard_negatives": ["hue"]}, "hard_negatives"),
        ({"hard_negatives": ["shape", "shape"]}, "hard_negatives"),
        ({"paired_attributes": ["texture"]}, "paired_attributes"),
    ],
)
def test_invalid_settings_name_the_key(values, key):
    with pytest.raises(ValueError, match=key):
        TrainingConfig.from_mapping(values)


def test_each_prompt_ensemble_is_every_one_object_caption_of_the_world():
    world = PlantedConfig(counts={"train": 200, "test": 0, "test_shifted": 0})
    vocabularies = world.vocabularies()
    _, _, records = generate_split(world, "train")
    single = records[records["num_objects"] == 1]
    for attribute, values in vocabularies.items():
        templates = attribute_templates(vocabularies, attribute)
        assert len(templates) == math.prod(len(v) for a, v in vocabularies.items() if a != attribute)
        prompts = {template.format(value) for template in templates for value in values}
        assert len(prompts) == math.prod(len(v) for v in vocabularies.values())
        assert set(single["caption"]) <= prompts
    with pytest.raises(ValueError, match="attribute"):
        attribute_templates(vocabularies, "texture")


def test_class_embeddings_average_the_normalised_prompt_embeddings():
    model, tokenizer = create_planted_clip(0)
    templates = ["a small {} square at the top on dots", "a large {} ring at the left on noise"]
    with torch.no_grad():
        ensembled = class_embeddings(model.eval(), tokenizer, ["red", "blue"], templates)
        prompts = F.normalize(model.encode_text(tokenizer([t.format(v) for v in ["red", "blue"] for t in templates])), dim=-1)
    expected = F.normalize(prompts.view(2, 2, -1).mean(1), dim=-1)
    torch.testing.assert_close(ensembled, expected)
    assert not torch.allclose(ensembled[0], prompts[0])  # the mean, not one prompt


def test_zero_shot_accuracies_name_an_unknown_attribute():
    world = PlantedConfig(counts={"train": 0, "test": 4, "test_shifted": 0})
    images, _, records = generate_split(world, "test")
    model, tokenizer = create_planted_clip(0)
    accuracies = zero_shot_accuracies(model, tokenizer, images, records, world.vocabularies())
    assert set(accuracies) == set(world.vocabularies()) and all(0 <= a <= 1 for a in accuracies.values())
    with pytest.raises(ValueError, match="label"):
        zero_shot_accuracies(model, tokenizer, images, records, {"label": ["circle"]})


@pytest.mark.parametrize("attribute", ["colour", "shape", "size", "position", "background"])
def test_a_swap_negative_is_its_caption_with_that_attribute_changed(attribute):
    _, _, records = generate_split(WORLD, "train")
    values = WORLD.vocabularies()[attribute]
    negatives = attribute_swap_negatives(records, WORLD.vocabularies(), [attribute])
    batch = torch.arange(len(records))
    captions = negatives(batch, torch.Generator().manual_seed(0))
    assert captions == negatives(batch, torch.Generator().manual_seed(0))  # drawn from the generator only
    drawn = set()
    for negative, record in zip(captions, records.itertuples()):
        scene = json.loads(record.objects)
        swaps = {}
        for value in values:
            if value != getattr(record, attribute):
                changed = [dict(scene[0], **({attribute: value} if attribute != "background" else {})), *scene[1:]]
                swaps[caption(changed, value if attribute == "background" else record.background)] = value
        assert negative in swaps, (negative, record.caption)
        drawn.add(swaps[negative])
    assert len(drawn) == len(values)  # every other value gets drawn
    assert len(negatives(batch[:5], torch.Generator())) == 5


def test_hard_negatives_only_add_candidates_for_the_images():
    images, texts = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    plain = contrastive_loss(images, texts, scale)
    assert contrastive_loss(images, texts, scale, texts[:0]) == pytest.approx(plain.item())
    negatives = F.normalize(torch.randn(16, 8), dim=-1)
    logits, labels = scale * images @ texts.T, torch.arange(4)
    image_side = F.cross_entropy(torch.cat([logits, scale * images @ negatives.T], 1), labels)
    assert contrastive_loss(images, texts, scale, negatives) == pytest.approx(
        (image_side + F.cross_entropy(logits.T, labels)).item() / 2
    )


def test_paired_batches_join_each_image_to_one_differing_in_one_listed_attribute():
    _, _, records = generate_split(PlantedConfig(counts={"train": 1500, "test": 2, "test_shifted": 2}), "train")
    attributes = ["shape", "colour"]
    pair = attribute_pairs(records, attributes)
    batch = torch.randperm(len(records), generator=torch.Generator().manual_seed(0))[:65]
    paired = pair(batch, torch.Generator().manual_seed(3))
    assert torch.equal(paired, pair(batch, torch.Generator().manual_seed(3)))
    assert torch.equal(paired[:32], batch[:32]) and paired[64] == batch[64] and len(paired) == 65
    found = 0
    for anchor, partner in zip(paired[:32].tolist(), paired[32:64].tolist()):
        a, b = records.iloc[anchor], records.iloc[partner]
        scene_a, scene_b = json.loads(a.objects), json.loads(b.objects)
        swapped = {caption([{**scene_a[0], key: scene_b[0][key]}, *scene_a[1:]], a.background) for key in attributes}
        found += b.caption != a.caption and b.caption in swapped
    assert len({records.caption[index] for index in paired[:64].tolist()}) == 64  # no caption twice among the pairs
    assert found >= 12  # 16 here: most one-object anchors find a partner; random partners (the rest) almost never are one
