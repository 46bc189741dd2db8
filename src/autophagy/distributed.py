"""Data-parallel training in one pod or machine: ``torchrun --nproc_per_node=N -m autophagy.cli train ...``.

torchrun starts N copies of the command with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the
rendezvous address in the environment. :func:`process_group` turns that into a
``torch.distributed`` process group for the duration of a train stage (NCCL with one GPU per
process, ``cuda:LOCAL_RANK``, when the training device is CUDA; gloo on CPU), and into nothing at
all for a plain single process. Inside it the shared trainer
(:meth:`autophagy.models.torch_model.TorchGenerativeModel.fit`) wraps the network in
DistributedDataParallel and splits every global batch across the ranks; only rank 0 writes
checkpoints, metrics and MLflow records, and the others wait for it at a barrier.

Only ``train`` runs data-parallel; ``sample`` and ``evaluate`` stay single-process.
This module imports torch only inside its functions (the CLI asks :func:`is_main_process`
before anything heavy is loaded).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How long a rank waits at a barrier or collective (rank 0 may be uploading a checkpoint to MLflow).
TIMEOUT = datetime.timedelta(hours=1)


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when not launched by it)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0 (from the environment; imports nothing)."""
    return os.environ.get("RANK", "0") == "0"


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the active process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class Group:
    """The processes of one data-parallel train stage (``world == 1``: just this one)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (a no-op for one process)."""
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Group]:
    """The process group of a torchrun launch for training on ``device`` (``train.device``).

    With ``WORLD_SIZE`` <= 1 (no torchrun) this yields ``Group()`` and touches nothing. Under
    torchrun: ``auto``/``cuda`` with CUDA available -> NCCL, ``cuda:LOCAL_RANK`` is made the current
    device; ``cpu`` (or ``auto`` without CUDA) -> gloo. ``cuda:N`` pins every rank to one GPU and
    is refused. A group that already exists (a caller set one up) is used as it is.
    """
    world = launched_world_size()
    if world <= 1:
        yield Group()
        return
    import torch
    import torch.distributed as dist

    from autophagy.config import ConfigError
    from autophagy.models.base import ModelError

    if dist.is_initialized():
        yield Group(dist.get_rank(), dist.get_world_size())
        return
    if device.startswith("cuda:"):
        raise ConfigError(
            f"train.device={device} pins every process to one GPU; under torchrun (WORLD_SIZE={world}) "
            "use train.device=auto or cuda: rank r trains on cuda:LOCAL_RANK"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("train.device=cuda was asked for but CUDA is not available on this machine")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ModelError(
                f"torchrun started local rank {local_rank} but this machine has "
                f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node <= the GPU count"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    try:
        yield Group(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def torchrun_train_command(
    options_path: str | Path,
    train_set: str,
    out_dir: str,
    generation: int,
    seed: int,
    lam: str,
    init: str | None,
    nproc: int,
    result_path: str | Path,
) -> list[str]:
    """The command line of a data-parallel train stage on one machine or pod (``python -m
    torch.distributed.run`` is ``torchrun``; ``--standalone``: a rendezvous on localhost).
    ``options_path``: the train step's options (:func:`autophagy.step_config.step_options`, JSON)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "autophagy.cli",
        "train",
        "--step-options",
        str(options_path),
        "--train-set",
        str(train_set),
        "--out",
        str(out_dir),
        "--generation",
        str(generation),
        "--seed",
        str(seed),
        "--result",
        str(result_path),
    ]
    if lam:
        command += ["--lam", lam]
    if init:
        command += ["--init", str(init)]
    return command


def run_train_under_torchrun(
    options_json: str, train_set: str, out_dir: str, generation: int, seed: int, lam: str, init: str | None, nproc: int
) -> dict[str, Any]:
    """Run ``autophagy train`` over ``nproc`` processes of this machine; return rank 0's result.

    The ranks get the train step's options as a file and the bookkeeping through the inherited
    environment (:mod:`autophagy.step_config`).
    """
    scratch = Path(tempfile.mkdtemp(prefix=".torchrun-", dir=Path(out_dir).parent))
    try:
        options_path, result_path = scratch / "options.json", scratch / "result.json"
        options_path.write_text(options_json)
        command = torchrun_train_command(
            options_path, train_set, out_dir, generation, seed, lam, init, nproc, result_path
        )
        print("+ " + " ".join(command), flush=True)
        returncode = subprocess.run(command, check=False).returncode
        if returncode != 0:
            raise RuntimeError(
                f"data-parallel training over {nproc} processes failed (torchrun exit code {returncode}); "
                "the ranks' errors are in the log above"
            )
        return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
