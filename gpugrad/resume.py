"""Training checkpoints: everything a stopped run needs to continue as if it never stopped.

``save_training`` writes, with ``gg.save``: the model's and the optimizer's state dicts, the
number of finished epochs, the batch order's random-generator state (so the next epoch draws
the same permutation it would have drawn), the settings that must not change on resume, and
any extra values (a loss history, normalisation statistics). ``restore_training`` loads all
of it into a freshly built model, optimizer and ``Batches``. A run stopped after epoch k and
resumed ends with exactly the parameters of an uninterrupted run: ``gpugrad train --save``
and ``--resume`` use these two functions.

>>> import os, tempfile, numpy as np, gpugrad as gg
>>> from gpugrad import nn, optim, resume
>>> from gpugrad.data import Batches
>>> model = nn.Linear(2, 1, seed=0)
>>> opt = optim.SGD(model.parameters(), lr=0.1)
>>> batches = Batches(np.ones((4, 2), "float32"), np.zeros(4), 2, seed=0)
>>> path = os.path.join(tempfile.mkdtemp(), "run.safetensors")
>>> resume.save_training(path, model, opt, batches, epoch=3, settings={"seed": 0})
>>> resume.restore_training(path, model, opt, batches, settings={"seed": 0})["epoch"]
3
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from . import backend as B
from ._version import __version__
from .checkpoint import CheckpointError, load, save
from .data import Batches
from .nn.module import Module
from .optim import Optimizer


def save_training(path: str | os.PathLike, model: Module, opt: Optimizer, batches: Batches,
                  *, epoch: int, settings: Mapping[str, Any] | None = None,
                  extra: Mapping[str, Any] | None = None) -> None:
    """Write a training checkpoint after ``epoch`` finished epochs (see the module
    docstring). ``settings`` are compared on restore; ``extra`` comes back as it was."""
    save({
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "train": {
            "epoch": int(epoch),
            "rng": batches.rng.bit_generator.state,
            "settings": dict(settings or {}),
            "extra": dict(extra or {}),
        },
        "meta": {"gpugrad": __version__, "backend": B.current().name, "step": opt.steps,
                 "dtypes": sorted({str(p.dtype) for p in model.parameters()})},
    }, path)


def restore_training(path: str | os.PathLike, model: Module, opt: Optimizer,
                     batches: Batches, *, settings: Mapping[str, Any] | None = None) -> dict:
    """Load a training checkpoint into ``model``, ``opt`` and ``batches`` (their order
    generator). Returns ``{"epoch": finished epochs, "extra": ..., "meta": ...}``. Raises a
    CheckpointError naming each setting that differs from the checkpoint's."""
    state = load(path)
    train = state.get("train") if isinstance(state, dict) else None
    if not isinstance(train, dict) or "model" not in state or "optimizer" not in state:
        raise CheckpointError(f"resume {path}: not a training checkpoint (it needs model, "
                              "optimizer and train entries; gpugrad train --save writes one)")
    saved = train.get("settings", {})
    differ = [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}"
              for k, v in (settings or {}).items() if saved.get(k) != v]
    if differ:
        raise CheckpointError(f"resume {path}: settings differ from the run that wrote it ("
                              + "; ".join(differ) + "); resume with the same settings")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    batches.rng.bit_generator.state = train["rng"]  # the next epoch's order, as it was
    return {"epoch": int(train["epoch"]), "extra": train.get("extra", {}),
            "meta": state.get("meta", {})}


def restore_parameters(path: str | os.PathLike, model: Module) -> None:
    """Load the parameters of an ``.npz`` written by ``gpugrad train --save params.npz``
    into ``model``; its layer sizes (``_sizes``) must match."""
    state = load(path)
    sizes = state.get("_sizes")
    want = getattr(model, "sizes", None)
    if sizes is not None and want is not None and B.to_numpy(sizes).tolist() != list(want):
        raise CheckpointError(_sizes_differ(path, B.to_numpy(sizes).tolist(), list(want)))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("_")})


def _sizes_differ(path: Any, had: list, want: list) -> str:
    """Why an MLP of sizes ``had`` (features, hidden..., classes) cannot start a run that
    builds ``want``, naming what differs and what to do."""
    why = []
    if had[0] != want[0]:
        why.append(f"it takes {had[0]} features and this --data has {want[0]}")
    if had[-1] != want[-1]:
        why.append(f"it was trained on {had[-1]} classes and this --data has {want[-1]} "
                   f"(labels 0..{want[-1] - 1}); resume only on data with the same classes")
    if had[1:-1] != want[1:-1]:
        hidden = ",".join(str(h) for h in had[1:-1])
        why.append(f"its hidden sizes are {hidden or 'none'} and this run builds "
                   f"{','.join(str(h) for h in want[1:-1]) or 'none'}; pass --hidden "
                   f"{hidden or chr(34) * 2}")
    return (f"--resume {path}: it holds an MLP of sizes {had}, this run builds {want}: "
            + "; ".join(why))


# --- the hooks of ``gpugrad train`` -------------------------------------------------------

def is_checkpoint(path: str | None) -> bool:
    """Does ``--save path`` ask for a training checkpoint (a ``.safetensors`` name)?"""
    return bool(path) and str(path).endswith(".safetensors")


def settings(args: Any, hidden: list) -> dict:
    """The ``gpugrad train`` options a resumed run must share with the run that wrote the
    checkpoint."""
    return {"data": args.data, "hidden": list(hidden), "activation": args.activation,
            "optimizer": args.optimizer, "batch_size": args.batch_size, "seed": args.seed,
            "test_split": args.test_split}


def from_args(args: Any, model: Module, opt: Optimizer, batches: Batches, hidden: list,
              history: dict) -> int:
    """``gpugrad train --resume``: load the checkpoint (or an ``.npz`` of parameters) into
    the run, extend ``history`` with the epochs done, and return how many were done.

    An ``--lr`` given on the command line replaces the checkpoint's rate (said in one line);
    without one the checkpoint's rate goes on. ``--epochs`` at or below the epochs the
    checkpoint finished is refused. The settings of ``settings`` must not change."""
    path = getattr(args, "resume", None)
    if not path:
        return 0
    if str(path).endswith(".npz"):  # what --save params.npz writes: parameters only
        restore_parameters(path, model)
        print(f"starting from the parameters in {path} (an .npz holds no optimizer state "
              "or epoch; --save ckpt.safetensors writes both)")
        return 0
    if not is_checkpoint(path):
        raise CheckpointError(f"--resume {path}: expected a .safetensors checkpoint written "
                              "by --save ckpt.safetensors (or parameters from --save "
                              "params.npz)")
    got = restore_training(path, model, opt, batches, settings=settings(args, hidden))
    if args.epochs <= got["epoch"]:
        raise CheckpointError(f"--epochs {args.epochs}: the checkpoint {path} has already "
                              f"finished {got['epoch']} epoch(s), so there is nothing to "
                              f"train; --epochs counts all epochs, so pass more than "
                              f"{got['epoch']} to continue")
    for k, v in got["extra"].get("history", {}).items():
        history[k] = list(v)
    print(f"resumed from {path} after epoch {got['epoch']}")
    lr = getattr(args, "lr", None)
    if lr is not None and lr != opt.lr:
        print(f"--lr {lr:g}: the checkpoint trained at lr {opt.lr:g}; the resumed run uses "
              f"{lr:g}")
        opt.lr = lr
    return got["epoch"]


__all__ = ["from_args", "is_checkpoint", "restore_parameters", "restore_training",
           "save_training", "settings"]
