"""A ``train_state.pt`` (or a ``.bin`` of weights) that torch's weights-only unpickler refuses is
reported in autophagy's words: the file, what it asked for, that it may have been altered, and
never torch's advice to load it with ``weights_only=False`` (which would run its code)."""

from __future__ import annotations

import os

import pytest
import torch

from autophagy.cli import _is_user_error
from autophagy.models import ModelError, build_model
from autophagy.models.checkpoint import TRAIN_STATE, load_checkpoint, load_plain_tensors, save_checkpoint

ADVICE = ("weights_only", "trust", "Re-running", "torch.serialization", "add_safe_globals")


class _Payload:
    marker = ""

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def checkpoint(tmp_path, tiny_cfg):
    path = tmp_path / "ckpt"
    save_checkpoint(build_model(tiny_cfg("digits").model, (8, 8, 1)), path, {})
    return path


def test_a_train_state_with_code_is_refused_in_our_words(checkpoint, tmp_path):
    payload = _Payload()
    payload.marker = str(tmp_path / "pwned")
    state = checkpoint / TRAIN_STATE
    torch.save({"optimizer": payload}, state)
    with pytest.raises(ModelError) as err:
        load_checkpoint(checkpoint)
    message = str(err.value)
    assert message.startswith(
        f"checkpoint file {state} is not a train state autophagy wrote: it asks for objects "
        "that only code could build ("
    )
    assert "system" in message and "altered or made by other software" in message
    assert not [word for word in ADVICE if word in message], message
    assert "\n" not in message and _is_user_error(err.value)
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_train_state_is_corrupted(checkpoint):
    state = checkpoint / TRAIN_STATE
    torch.save({"step": 1}, state)
    state.write_bytes(state.read_bytes()[:60])
    with pytest.raises(ModelError, match=rf"checkpoint file {state} is corrupted or truncated: "):
        load_checkpoint(checkpoint)


def test_a_weights_file_with_code_is_refused_in_our_words(tmp_path):
    path = tmp_path / "diffusion_pytorch_model.bin"
    torch.save({"conv_in.weight": torch.zeros(1), "x": _Payload()}, path)
    with pytest.raises(ModelError) as err:
        load_plain_tensors(path, str(path))
    message = str(err.value)
    assert message.startswith(f"{path} is not a plain tensor file: it asks for objects that only code could build")
    assert not [word for word in ADVICE if word in message], message
