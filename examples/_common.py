"""What the training scripts share: arguments, the optimizer, the training loop, the plot."""

from __future__ import annotations

import argparse
import builtins
import os
import time

import jitnet as jn


def parse_args(description: str, epochs: int, lr: float, batch_size: int) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", metavar="DIR", help="MNIST IDX files (raw or .gz); default: the embedded 8x8 digits")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default: <script>.safetensors here)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--plot", metavar="PNG", help="save the learning curves (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args()


def sgd_cosine(args, model: jn.nn.Module, n_train: int) -> jn.optim.SGD:
    """SGD with momentum 0.9 and weight decay 1e-4, the learning rate decaying from args.lr to 0 on a
    cosine over all the steps of args.epochs epochs."""
    steps_per_epoch = -(-n_train // (args.batch_size * jn.distributed.world_size()))  # global batches
    lr = jn.optim.schedules.cosine(args.lr, args.epochs * steps_per_epoch)
    return jn.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)


def run(args, name: str, model: jn.nn.Module, optimizer, data, target: float) -> dict:
    """Train with a Trainer, print per-epoch loss/accuracy/samples/s, save a checkpoint, plot. Under
    `mpiexec -n N` the Trainer trains data-parallel (--batch-size per rank) and rank 0 prints."""
    print = builtins.print if jn.distributed.is_main() else (lambda *args, **kwargs: None)
    (x_train, y_train), (x_test, y_test) = data
    print(f"{name}: {len(x_train)} training and {len(x_test)} test images of shape {x_train.shape[1:]}")
    ranks = jn.distributed.world_size()
    print(
        f"device: {jn.default_device()}; parameters: {sum(p.size for p in model.parameters().values())}"
        + (f"; {ranks} ranks, global batch {args.batch_size * ranks}" if ranks > 1 else "")
    )
    trainer = jn.nn.Trainer(model, jn.nn.cross_entropy, optimizer)
    checkpoint = args.checkpoint or f"{name}.safetensors"
    if args.resume and os.path.exists(checkpoint):
        trainer.load(checkpoint)
        print(f"resumed from {checkpoint} at epoch {trainer.epoch}")
    start = time.perf_counter()
    history = trainer.fit(
        x_train,
        y_train,
        epochs=args.epochs - trainer.epoch if args.resume else args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_test, y_test),
        verbose=0 if args.quiet else 1,
        checkpoint=checkpoint,
        drop_last=True,  # the few leftover images (a new batch shape) would compile a second step
    )
    if args.quiet:
        for e in range(len(history["loss"])):
            print(
                f"epoch {e + 1}: loss {history['loss'][e]:.4f} accuracy {history['accuracy'][e]:.4f} "
                f"test_loss {history['val_loss'][e]:.4f} test_accuracy {history['val_accuracy'][e]:.4f} "
                f"{history['samples_per_s'][e]:.0f} samples/s"
            )
    final = trainer.evaluate(x_test, y_test)
    status = "reached" if final["accuracy"] >= target else "MISSED"
    print(
        f"test accuracy {final['accuracy']:.4f} ({status} the {target:.0%} target) in "
        f"{time.perf_counter() - start:.1f} s (compilation included); checkpoint saved to {checkpoint}"
    )
    if args.plot and jn.distributed.is_main():
        plot(history, args.plot, name)
    return final


def plot(history: dict, path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'jitnet[examples]'): no plot")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history["loss"]) + 1)
    a.plot(epochs, history["loss"], label="train")
    a.plot(epochs, history["val_loss"], label="test")
    a.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    b.plot(epochs, history["accuracy"], label="train")
    b.plot(epochs, history["val_accuracy"], label="test")
    b.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for ax in (a, b):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"learning curves saved to {path}")
