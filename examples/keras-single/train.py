"""A TI training script: one instance, Keras.

Reads the `train` (and optional `test`) channel from TM_CHANNEL_TRAIN / TM_CHANNEL_TEST (.npz files
with arrays x and y, see examples/make_data.py), takes hyperparameters as --key value arguments,
saves a SavedModel under TM_MODEL_DIR/1 (plus model.keras), writes its history to
TM_OUTPUT_DATA_DIR, and checkpoints every epoch to TM_CHECKPOINT_DIR when the job has a
checkpointPath, resuming from the last one after a retry.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

MODEL_DIR = os.environ.get("TM_MODEL_DIR", "/opt/ml/model")
OUTPUT_DATA_DIR = os.environ.get("TM_OUTPUT_DATA_DIR", "/opt/ml/output/data")
# The failure file sits beside output/data: /opt/ml/output/failure.
FAILURE_FILE = os.path.join(os.path.dirname(OUTPUT_DATA_DIR.rstrip("/")), "failure")


def fail(reason: str) -> None:
    """Say why in the failure file (it becomes the job's failureReason) and exit with an error."""
    with open(FAILURE_FILE, "w") as f:
        f.write(reason)
    print(reason, file=sys.stderr)
    sys.exit(1)


def load(channel: str) -> tuple[np.ndarray, np.ndarray] | None:
    directory = os.environ.get(f"TM_CHANNEL_{channel.upper()}")
    if not directory:
        return None
    files = sorted(glob.glob(os.path.join(directory, "**", "*.npz"), recursive=True))
    if not files:
        fail(f"no .npz files in the {channel} channel ({directory})")
    parts = [np.load(f) for f in files]
    return np.concatenate([p["x"] for p in parts]), np.concatenate([p["y"] for p in parts])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=0.01)
    args, unknown = parser.parse_known_args()
    hps = json.loads(os.environ.get("TM_HPS", "{}"))
    print(f"arguments: {vars(args)} (ignored: {unknown}); TM_HPS: {hps}")

    train = load("train")
    if train is None:
        fail("no train channel: call fit({'train': 'cos://...'}) or fit('cos://...')")
    test = load("test")

    import keras
    import tensorflow as tf

    x, y = train
    classes = int(y.max()) + 1
    model = keras.Sequential(
        [
            keras.Input(shape=(x.shape[1],)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(classes),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    initial_epoch = 0
    callbacks: list[keras.callbacks.Callback] = []
    checkpoint_dir = os.environ.get("TM_CHECKPOINT_DIR")
    if checkpoint_dir:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=tf.Variable(0))
        manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=2)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint)
            initial_epoch = int(checkpoint.epoch.numpy())
            print(f"resumed from {manager.latest_checkpoint} at epoch {initial_epoch}")

        class Save(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                checkpoint.epoch.assign(epoch + 1)
                manager.save()

        callbacks.append(Save())

    class Report(keras.callbacks.Callback):
        # One parseable line per epoch, for the job's metricDefinitions (e.g. "loss=([0-9.]+)").
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            print(f"epoch {epoch + 1}: loss={logs['loss']:.4f} accuracy={logs['accuracy']:.4f}", flush=True)

    callbacks.append(Report())
    history = model.fit(
        x,
        y,
        epochs=args.epochs,
        initial_epoch=initial_epoch,
        batch_size=args.batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    if test is not None:
        loss, accuracy = model.evaluate(*test, verbose=0)
        print(f"test: loss={loss:.4f} accuracy={accuracy:.4f}")

    os.makedirs(MODEL_DIR, exist_ok=True)
    model.export(os.path.join(MODEL_DIR, "1"))  # SavedModel, version 1 (TF Serving's layout)
    model.save(os.path.join(MODEL_DIR, "model.keras"))
    os.makedirs(OUTPUT_DATA_DIR, exist_ok=True)
    with open(os.path.join(OUTPUT_DATA_DIR, "history.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.history.items()}, f)


if __name__ == "__main__":
    main()
