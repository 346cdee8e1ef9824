"""Contrastive training of the planted CLIP: deterministic on CPU, validated settings, a learning signal."""

from __future__ import annotations

import pytest

from cliplens.planted import PlantedConfig, generate_split
from cliplens.training import TrainingConfig, create_planted_clip, lr_factor, train_clip


@pytest.fixture(scope="module")
def world():
    images, _, records = generate_split(PlantedConfig(counts={"train": 64, "test": 2, "test_shifted": 2}), "train")
    return images, records["caption"].tolist()


def short_run(images, captions, steps=6):
    model, tokenizer = create_planted_clip(0)
    cfg = TrainingConfig(steps=steps, batch_size=16, warmup_steps=2, eval_every=3, lr=3e-3)
    return model, train_clip(model, tokenizer, images, captions, cfg, evaluate=lambda model: {"probe": 1.0})


def test_two_runs_are_identical_and_the_loss_falls(world):
    images, captions = world
    model, first = short_run(images, captions)
    _, second = short_run(images, captions)
    assert [row["loss"] for row in first] == [row["loss"] for row in second]
    assert first[-1]["loss"] < first[0]["loss"]
    assert [row.get("probe") for row in first] == [None, None, 1.0, None, None, 1.0]
    assert not model.training


def test_schedule_warms_up_then_decays_to_zero():
    cfg = TrainingConfig(steps=10, warmup_steps=2)
    factors = [lr_factor(cfg, step) for step in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[2:], factors[3:])) and factors[-1] < 0.05


@pytest.mark.parametrize(
    ("values", "key"),
    [({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"steps": 10, "warmup_steps": 11}, "warmup_steps"), ({"stepz": 1}, "key")],
)
def test_invalid_settings_name_the_key(values, key):
    with pytest.raises(ValueError, match=key):
        TrainingConfig.from_mapping(values)
