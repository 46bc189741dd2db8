"""OT-CFM's minibatch OT pairing (Tong et al. 2023, Alg. 2): the exact assignment, and solving
the next step's pairing while the current step runs gives the same pairing, the same training
bit for bit, and the same result after a resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from autophagy.config import OTCFMModelConfig, TrainConfig
from autophagy.data.sources import digits_images_and_labels
from autophagy.models.checkpoint import load_checkpoint
from autophagy.models.otcfm import OTCFMModel, PendingPairing, assignment_order, ot_pair
from autophagy.models.training import generator_copy


def test_assignment_order_is_the_minimum_cost_permutation():
    cost = np.random.default_rng(0).random((6, 6))
    best = min(itertools.permutations(range(6)), key=lambda p: sum(cost[p[j], j] for j in range(6)))
    assert assignment_order(cost).tolist() == list(best)  # noise best[j] goes to data j


def test_ot_pair_is_scipys_assignment_of_the_float64_squared_distances():
    generator = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(64, 1, 8, 8, generator=generator), torch.randn(64, 1, 8, 8, generator=generator)
    a, b = x0.flatten(1).double().numpy(), x1.flatten(1).double().numpy()
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert torch.equal(ot_pair(x0, x1), x0[torch.from_numpy(rows[np.argsort(cols)])])
    paired = ot_pair(x0, x1).flatten(1)
    assert ((paired - x1.flatten(1)) ** 2).sum() < ((x0 - x1).flatten(1) ** 2).sum()  # it moved something


def test_a_pending_pairing_is_the_pairing_of_the_noise_the_loss_will_draw():
    x1 = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    noise = torch.Generator().manual_seed(3)
    pending = PendingPairing(x1, generator_copy(noise))
    state = noise.get_state()
    x0 = torch.randn(x1.shape, generator=noise)  # what the loss draws
    assert torch.equal(x0[pending.order_for(state, x1.device)], ot_pair(x0, x1))
    assert pending.order_for(noise.get_state(), x1.device) is None  # another state: not its noise


class RecordingOTCFM(OTCFMModel):
    """A spy: the real model, counting the pairings the trainer asks it to solve ahead."""

    prepared = 0

    def prepare_next(self, x_next, noise):
        self.prepared += 1
        super().prepare_next(x_next, noise)


@pytest.fixture(scope="module")
def digits():
    return digits_images_and_labels("train")[0]


def fit(rows, overlap: bool, coupling: str = "ot", scratch_dir=None, **train):
    torch.manual_seed(0)
    model = RecordingOTCFM(OTCFMModelConfig(coupling=coupling), rows.shape[1:])
    model.overlap_pairing = overlap
    report = model.fit(rows, 2.56, train_config(**train), seed=0, scratch_dir=scratch_dir)
    return model, report


def train_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"batch_size": 256, "lr": 1e-3, "device": "cpu", "xflip": True, **overrides})


def assert_same_weights(a, b):
    for group in ("model", "ema"):
        for key, value in a.tensors()[group].items():
            assert torch.equal(value, b.tensors()[group][key]), (group, key)


def test_solving_ahead_trains_bit_for_bit_as_solving_in_the_step(digits):
    ahead, report = fit(digits, overlap=True)
    inline, _ = fit(digits, overlap=False)
    assert report.steps == 10 and ahead.prepared == report.steps - 1  # every step but the first was solved ahead
    assert inline.prepared == 0
    assert_same_weights(ahead, inline)
    auto, _ = fit(digits, overlap="auto")
    assert auto.prepared == 0  # the default overlaps on CUDA only
    assert_same_weights(auto, inline)
    independent, _ = fit(digits, overlap=True, coupling="independent")
    assert independent.prepared == 0  # nothing to pair
    weights, other = ahead.tensors()["model"], independent.tensors()["model"]
    assert any(not torch.equal(weights[key], other[key]) for key in weights)  # the pairing changes training


def test_a_resumed_fit_solving_ahead_ends_as_the_uninterrupted_one(digits, tmp_path):
    # 1,437 rows: a new data order every 5 steps of 256. The one train state this fit writes is at
    # 1,280 images (step 5; checkpoints every 1.2 kimg, none at the end), so the resumed fit starts
    # with a new order, which the uninterrupted fit's step 5 had peeked at from a copy.
    assert len(digits) // 256 == 5
    uninterrupted, _ = fit(digits, overlap=True, scratch_dir=tmp_path, checkpoint_every_kimg=1.2)
    resumed = load_checkpoint(tmp_path)
    assert resumed.progress["images_seen"] == 1280 and resumed.progress["position"] == 1280
    report = resumed.fit(digits, 2.56, train_config(checkpoint_every_kimg=1.2), seed=0)
    assert report.resumed_from_kimg == pytest.approx(1.28) and report.steps == 10
    assert_same_weights(resumed, uninterrupted)


@pytest.mark.gpu
def test_on_cuda_solving_ahead_trains_as_solving_in_the_step(digits):
    """The device path: pinned copies, a CUDA event, no blocking copy (bf16 autocast, channels-last)."""
    ahead, report = fit(digits, overlap=True, device="cuda")
    inline, _ = fit(digits, overlap=False, device="cuda")
    assert report.precision == "bf16" and report.channels_last and ahead.prepared == report.steps - 1
    for group in ("model", "ema"):
        for key, value in ahead.tensors()[group].items():
            torch.testing.assert_close(value, inline.tensors()[group][key], rtol=1e-5, atol=1e-7)
