"""``gpugrad train``: train an MLP classifier by gradient descent, on the device.

With no ``--data`` it trains on the embedded UCI digits. The loss stays on the device and is
read once per epoch, never once per step.

Bad input is refused before training, with exit status 2 and one line naming the option or
the data: a non-finite, zero or negative ``--lr``; ``--hidden 0``; a negative ``--seed``;
``--save`` or ``--plot`` into a folder that does not exist or cannot be written; features
that are NaN or infinite (the first row and column are named).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any, Sequence

import numpy as np

from . import backend as B
from . import cli_checks as check
from . import nn, optim, resume
from .cli_checks import CLIError
from .data import Batches, train_test_split
from .datasets import load_digits
from .distributed import launch
from .graph import Placeholder
from .tensor import asarray, no_grad


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the option, like the other errors, and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


RESUME_HELP = """\
--resume: continue a run from a .safetensors checkpoint that --save wrote, up to --epochs
epochs in all (--epochs must be above the epochs the checkpoint finished). On resume:
--lr given: the run continues at the new rate and says so in one line (not given: the
checkpoint's rate); --epochs, --backend, --save, --plot and --quiet may change freely;
--data, --hidden, --activation, --optimizer, --batch-size, --seed and --test-split must be
those of the checkpoint's run (they fix the model, the optimizer state, the train/test
split and the batch order the checkpoint continues), else the resume is refused naming
each one that differs. An .npz from --save gives starting parameters only (no optimizer
state or epoch count); its features, hidden sizes and classes must match."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gpugrad", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an MLP classifier (default: the embedded digits)",
                       epilog=RESUME_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--data", help="file.npz (arrays X and y) or file.csv (last column = label)")
    t.add_argument("--backend", help="numpy, cupy or array_api_strict (default: "
                   "$GPUGRAD_BACKEND, else numpy)")
    t.add_argument("--hidden", default="64,64", type=check.hidden_sizes,
                   help="hidden layer sizes, each 1 or more (default 64,64)")
    t.add_argument("--activation", default="sigmoid",
                   help="sigmoid, tanh, relu, softplus, gelu or silu (default sigmoid)")
    t.add_argument("--optimizer", default="adam",
                   help="sgd, adam, adamw, rmsprop or adagrad (default adam)")
    t.add_argument("--lr", type=check.learning_rate, default=None,
                   help="learning rate, a finite number above 0 (default 0.01 for "
                   "adam, adamw, rmsprop and adagrad, 0.5 for sgd; on --resume, the checkpoint's)")
    t.add_argument("--epochs", type=check.positive, default=30,
                   help="epochs in all, those of a --resume checkpoint included (default 30)")
    t.add_argument("--batch-size", type=check.positive, default=32)
    t.add_argument("--seed", type=check.seed, default=0,
                   help="seed of the initial weights, the split and the batch order (0 or "
                   "above; default 0)")
    t.add_argument("--test-split", type=check.split_fraction, default=0.2,
                   help="fraction of rows held out for the test accuracy, from 0 (none: no "
                   "test accuracy is reported) up to below 1 (default 0.2)")
    t.add_argument("--save", help="write the trained parameters to this .npz file, or a "
                   "training checkpoint (model, optimizer, epoch, batch order) to this "
                   ".safetensors file after every epoch (its folder must exist and be "
                   "writable)")
    t.add_argument("--resume", help="continue the run a .safetensors checkpoint from --save "
                   "stopped, up to --epochs in all; which options may change is said "
                   "below (an .npz from --save gives starting parameters only)")
    t.add_argument("--plot", help="write loss and accuracy curves to this PNG (needs "
                   "matplotlib: pip install gpugrad[plot]; its folder must exist and be "
                   "writable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--distributed", action="store_true", help="data-parallel over the "
                   "processes that mpiexec or srun starts (pip install gpugrad[mpi]); "
                   "--batch-size is then the global batch, and rank 0 alone prints and writes")
    return p


def load_data(path: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(X as float32 rows, y as int64 labels, a description)."""
    if path is None:
        X, y = load_digits()
        return X.astype(np.float32), y.astype(np.int64), "UCI digits (embedded, 1797 x 64)"
    f = pathlib.Path(path)
    if not f.is_file():
        raise CLIError(f"--data: no such file: {path}")
    if f.suffix == ".npz":
        try:
            z = np.load(f)
        except (OSError, ValueError) as exc:
            raise CLIError(f"--data {path}: not a readable .npz file ({exc})") from None
        if not hasattr(z, "files"):  # a single .npy array under an .npz name
            raise CLIError(f"--data {path}: not an .npz archive with arrays X and y")
        with z:
            if "X" not in z or "y" not in z:
                raise CLIError(f"--data {path}: the .npz needs arrays named X and y, found "
                               f"{sorted(z.files)}")
            X, y = z["X"], z["y"]
    elif f.suffix == ".csv":
        try:
            table = np.loadtxt(f, delimiter=",", ndmin=2)
        except ValueError as exc:
            raise CLIError(f"--data {path}: not a numeric CSV ({exc})") from None
        if table.shape[1] < 2:
            raise CLIError(f"--data {path}: need feature columns and a label column, got "
                           f"{table.shape[1]} column(s)")
        X, y = table[:, :-1], table[:, -1]
    else:
        raise CLIError(f"--data {path}: expected a .npz or .csv file")
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim < 2 or X.shape[0] == 0:
        raise CLIError(f"--data {path}: X must have one row per sample, got shape {X.shape}")
    X = X.reshape(X.shape[0], -1)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise CLIError(f"--data {path}: y must have shape ({X.shape[0]},) to match X "
                       f"{X.shape}, got {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise CLIError(f"--data {path}: labels must be integers (class indices), got "
                           f"values such as {y[y != np.round(y)][:3].tolist()}")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise CLIError(f"--data {path}: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise CLIError(f"--data {path}: labels must be 0..n_classes-1, found {int(y.min())}")
    if X.dtype.kind not in "biuf":
        raise CLIError(f"--data {path}: features must be numbers, got dtype {X.dtype}")
    X32 = check.finite_features(X, f"--data {path}")
    return X32, y.astype(np.int64), f"{path} ({X.shape[0]} x {X.shape[1]})"


def _progress(iterable: Any, desc: str, quiet: bool) -> Any:
    if quiet:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


def train(args: argparse.Namespace) -> dict:
    if args.backend:
        B.set_backend(args.backend)
    if args.optimizer not in optim.OPTIMIZERS:
        raise CLIError(f"--optimizer: unknown {args.optimizer!r}; choose one of "
                       f"{', '.join(optim.OPTIMIZERS)}")
    if args.activation not in nn.layers.ACTIVATIONS:
        raise CLIError(f"--activation: unknown {args.activation!r}; choose one of "
                       f"{', '.join(nn.layers.ACTIVATIONS)}")
    hidden = args.hidden if isinstance(args.hidden, list) else check.hidden_sizes(args.hidden)
    if args.epochs < 1 or args.batch_size < 1:
        raise CLIError("--epochs and --batch-size must be at least 1")
    save_to = args.save
    if save_to and not resume.is_checkpoint(save_to) and not save_to.endswith(".npz"):
        save_to += ".npz"  # as savez
    check.writable_file("--save", args.save, save_to)
    check.writable_file("--plot", args.plot)
    plot = None
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plot
        except ImportError:
            print("gpugrad train: --plot needs matplotlib; install it with "
                  "`pip install gpugrad[plot]` (training continues without a plot)",
                  file=sys.stderr)

    if getattr(args, "distributed", False):  # every rank loads; a failure anywhere stops all
        X, y, description = launch.load_together(load_data, args.data, _ERRORS)
    else:
        X, y, description = load_data(args.data)
    n_classes = int(y.max()) + 1
    Xtr, ytr, Xte, yte = train_test_split(X, y, args.test_split, seed=args.seed)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    std[std == 0] = 1.0
    Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std

    model = nn.MLP([X.shape[1], *hidden, n_classes], activation=args.activation,
                   seed=args.seed)
    lr = args.lr if args.lr is not None else (0.5 if args.optimizer == "sgd" else 0.01)
    opt = optim.OPTIMIZERS[args.optimizer](model.parameters(), lr=lr)
    batches = Batches(Xtr, ytr, args.batch_size, shuffle=True, seed=args.seed)
    if getattr(args, "distributed", False):
        opt, batches = launch.distribute(model, opt, Xtr, ytr, args)
    history: dict[str, list] = {"loss": [], "train_acc": [], "test_acc": []}
    first = resume.from_args(args, model, opt, batches, hidden, history)  # --resume
    info = B.backend_info()
    print(f"gpugrad train: {description}; {len(ytr)} train / {len(yte)} test rows; "
          f"MLP {model.sizes} {args.activation}; {args.optimizer} lr {opt.lr:g}; "
          f"backend {info['name']} on {info['device']}")
    steps = 0
    step = compiled_step(model, opt, X.shape[1])
    start = time.perf_counter()
    for epoch in range(first, args.epochs):
        bar = _progress(batches, f"epoch {epoch + 1}/{args.epochs}", args.quiet)
        loss_sum, n_steps = run_epoch_compiled(step, bar)
        steps += n_steps
        if getattr(args, "distributed", False):  # every rank's share (accuracy is evaluated
            loss_sum, _ = launch.epoch_totals(loss_sum, loss_sum, len(ytr))  # on all rows)
        epoch_loss = float(loss_sum) / len(ytr)  # the one device read of the epoch
        # after the epoch's last step; only where it is shown (the compiled step returns
        # the loss alone)
        shown = not args.quiet or plot is not None
        train_acc = evaluate(model, Xtr, ytr) if shown else float("nan")
        test_acc = evaluate(model, Xte, yte)
        history["loss"].append(epoch_loss)
        history["train_acc"].append(train_acc)
        history["test_acc"].append(test_acc)
        if hasattr(bar, "close"):
            bar.close()
        if not args.quiet:
            print(f"epoch {epoch + 1:3d}/{args.epochs}  loss {epoch_loss:.4f}  "
                  f"train acc {train_acc:.4f}" + (f"  test acc {test_acc:.4f}" if len(yte)
                                                  else ""))
        if resume.is_checkpoint(args.save):  # --save ckpt.safetensors: after every epoch
            resume.save_training(args.save, model, opt, batches, epoch=epoch + 1,
                                 settings=resume.settings(args, hidden),
                                 extra={"history": history, "mean": mean, "std": std})
    wall = time.perf_counter() - start
    result = {
        "train_acc": evaluate(model, Xtr, ytr),
        "test_acc": history["test_acc"][-1] if len(yte) else float("nan"),
        "wall_s": wall,
        "steps": steps,
        "steps_per_s": steps / wall if wall > 0 else float("inf"),
        "backend": info["name"],
        "device": info["device"],
    }
    tested = (f"test accuracy {result['test_acc']:.4f}" if len(yte) else
              "no test rows (--test-split 0)")
    print(f"done: train accuracy {result['train_acc']:.4f}, {tested}, {wall:.2f} s, {steps} "
          f"steps ({result['steps_per_s']:.0f} steps/s), backend {result['backend']} on "
          f"{result['device']}")
    if args.save and not resume.is_checkpoint(args.save):
        arrays = {name: B.to_numpy(v) for name, v in model.state_dict().items()}
        np.savez(save_to, **arrays, _sizes=np.asarray(model.sizes), _mean=mean, _std=std)
        print(f"saved parameters to {save_to}")
    if resume.is_checkpoint(args.save) and args.epochs > first:
        print(f"saved a training checkpoint to {args.save}")
    if plot is not None and args.plot:
        _plot(plot, history, args.plot)
        print(f"wrote {args.plot}")
    return result


def run_epoch(model: nn.Module, opt: optim.Optimizer, batches: Any) -> tuple[Any, Any, int]:
    """One pass of eager training over ``(xb, yb)`` backend batches. Returns the summed loss
    and the number of correct predictions as 0-d device arrays (nothing is read per step),
    and the number of steps."""
    loss_sum = hit_sum = None
    steps = 0
    for xb, yb in batches:
        logits = model(asarray(xb, copy=False))  # batches are ours: no copy per step
        loss = nn.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        with no_grad():
            n = float(xb.shape[0])
            batch_loss = loss.data * n
            batch_hits = nn.accuracy(logits, yb) * n
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            hit_sum = batch_hits if hit_sum is None else hit_sum + batch_hits
    return loss_sum, hit_sum, steps


def compiled_step(model: nn.Module, opt: optim.Optimizer, n_features: int) -> Any:
    """``step(xb, yb) -> loss``: one training step (forward, backward and the optimizer's
    update) compiled into one program per batch shape (``Optimizer.minimize`` on a graph)."""
    xs = Placeholder((None, n_features), "float32", name="x")
    ys = Placeholder((None,), "int64", name="labels")
    loss = nn.cross_entropy(model(xs), ys)

    def step(xb: Any, yb: Any) -> Any:
        return opt.minimize(loss, feed={xs: xb, ys: yb})
    return step


def run_epoch_compiled(step: Any, batches: Any) -> tuple[Any, int]:
    """One pass of ``step`` over ``(xb, yb)`` backend batches: the summed loss as a 0-d
    device array (nothing is read per step) and the number of steps."""
    loss_sum = None
    steps = 0
    for xb, yb in batches:
        batch_loss = step(xb, yb) * float(xb.shape[0])
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        steps += 1
    return loss_sum, steps


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray, batch: int = 128) -> float:
    """Accuracy of ``model`` on host arrays, computed on the device, read once. (Batches of
    128 rows: on a shared 2-core machine 1,024-row matmuls ran 10x slower per row.)"""
    if len(y) == 0:
        return float("nan")
    hits = None
    with no_grad():
        for xb, yb in Batches(X, y, batch, shuffle=False):
            h = nn.accuracy(model(asarray(xb, copy=False)), yb) * float(xb.shape[0])
            hits = h if hits is None else hits + h
    return float(hits) / len(y)


def _plot(plt: Any, history: dict, path: str) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(history["loss"]) + 1)
    a.plot(epochs, history["loss"])
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    b.plot(epochs, history["train_acc"], label="train")
    if not np.isnan(history["test_acc"]).all():  # NaN throughout: no test rows
        b.plot(epochs, history["test_acc"], label="test")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_ERRORS = (CLIError, B.BackendError, FileNotFoundError, ValueError, TypeError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and args.distributed:
            return launch.main_train(args, train, _ERRORS)
        if args.command == "train":
            train(args)
        return 0
    except _ERRORS as exc:
        print(f"gpugrad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpugrad: interrupted", file=sys.stderr)
        return 130
