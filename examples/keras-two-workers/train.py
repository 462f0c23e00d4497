"""A TI training script for several instances: MultiWorkerMirroredStrategy with a custom loop.

The operator gives each instance TF_CONFIG (worker 0 is the chief); every worker reads the whole
`train` channel (.npz files, see examples/make_data.py) and the strategy shards it. Keras 3's
`model.fit` fails under this strategy upstream, so the loop is written with `strategy.run`. Only the
chief saves the model, to TM_MODEL_DIR/1 (a SavedModel); the other workers' results are discarded.
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
FAILURE_FILE = os.path.join(os.path.dirname(OUTPUT_DATA_DIR.rstrip("/")), "failure")


def fail(reason: str) -> None:
    with open(FAILURE_FILE, "w") as f:
        f.write(reason)
    print(reason, file=sys.stderr)
    sys.exit(1)


def load_train() -> tuple[np.ndarray, np.ndarray]:
    directory = os.environ.get("TM_CHANNEL_TRAIN")
    files = sorted(glob.glob(os.path.join(directory or ".", "**", "*.npz"), recursive=True))
    if not directory or not files:
        fail(f"no .npz files in the train channel ({directory})")
    parts = [np.load(f) for f in files]
    return np.concatenate([p["x"] for p in parts]), np.concatenate([p["y"] for p in parts])


def is_chief() -> bool:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return task.get("type", "worker") in ("chief", "worker") and (
        task.get("type") == "chief" or int(task.get("index", 0)) == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=0.01)
    args, _ = parser.parse_known_args()
    x, y = load_train()
    classes = int(y.max()) + 1

    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    workers = strategy.num_replicas_in_sync
    global_batch = args.batch_size * workers
    print(f"{workers} replicas in sync; chief: {is_chief()}; global batch {global_batch}", flush=True)

    def build() -> keras.Model:
        return keras.Sequential(
            [
                keras.Input(shape=(x.shape[1],)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(classes),
            ]
        )

    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.Adam(args.learning_rate)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=1)
        .batch(global_batch, drop_remainder=True)
    ).with_options(options)
    steps = len(x) // global_batch

    @tf.function
    def train_step(batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        def step(features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                loss = tf.nn.compute_average_loss(loss_fn(labels, logits), global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        per_replica = strategy.run(step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    for epoch in range(args.epochs):
        total = 0.0
        for batch in strategy.experimental_distribute_dataset(dataset):
            total += float(train_step(batch))
        print(f"epoch {epoch + 1}: loss={total / steps:.4f}", flush=True)

    if is_chief():
        # A plain copy of the trained weights exports without any collective among the workers.
        plain = build()
        plain.set_weights(model.get_weights())
        accuracy = float(np.mean(np.argmax(plain.predict(x, verbose=0), axis=1) == y))
        print(f"train accuracy={accuracy:.4f}", flush=True)
        os.makedirs(MODEL_DIR, exist_ok=True)
        plain.export(os.path.join(MODEL_DIR, "1"))


if __name__ == "__main__":
    main()
