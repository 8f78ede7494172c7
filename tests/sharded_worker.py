"""Trains the same small model on one device and data-parallel on N, in one process or as one of
several processes (``jax.distributed``), and writes the losses and parameters to compare.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python sharded_worker.py OUT.npz
    python sharded_worker.py OUT.npz --process I --processes P --port PORT   # multi-process
"""

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--process", type=int)
    parser.add_argument("--processes", type=int)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.processes,
            process_id=args.process,
        )

    import numpy as np

    from rnnjax import Classifier, LayerSpec, ModelConfig, init_params, losses
    from rnnjax.optimizers import rmsprop
    from rnnjax.sharding import data_mesh
    from rnnjax.train import fit
    from rnnjax.train_state import TrainState

    config = ModelConfig(40, 6, (LayerSpec("lstm", 5, dropout=0.2), LayerSpec("gru", 4)))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, size=(150, 9)).astype(np.int32)
    labels = ((ids[:, -3:] < 20).sum(1) >= 2).astype(np.int32)
    state = TrainState.create(
        model=Classifier(config),
        params=init_params(config, jax.random.key(0)),
        tx=rmsprop(1e-2),
        rng=jax.random.key(1),
        loss=losses.BinaryCrossentropy(from_logits=True),
        metrics=["accuracy", "auc"],
    )
    results = {}
    meshes = {"sharded": data_mesh()}
    if not args.processes:
        meshes["single"] = None
    # Streamed: every process reads only its share of each global batch of 16 (process p: rows
    # p * 16 / P .. of each batch), as a per-process grain or TFDS shard would give it. Whole
    # batches only: a padded last batch would put its padding rows elsewhere (and dropout masks
    # follow the row).
    processes, index = (args.processes or 1), (args.process or 0)

    def local_batches():
        for start in range(0, 112, 16):
            rows = np.arange(start, start + 16)
            share = np.array_split(rows, processes)[index]
            yield ids[share], labels[share][:, None].astype(np.float32)

    class Shard:  # re-iterable: every epoch reads the process's share again
        def __iter__(self):
            return local_batches()

        def __len__(self):
            return 7

    streams = {"stream": data_mesh()}
    if not args.processes:
        streams["one_device_stream"] = None
    for name, mesh in streams.items():
        streamed = fit(state, Shard(), epochs=3, mesh=mesh, verbose=0)
        results[f"{name}_loss"] = np.asarray(streamed.history.history["loss"])
        results[f"{name}_auc"] = np.asarray(streamed.history.history["auc"])
    for name, mesh in meshes.items():
        result = fit(
            state,
            ids[:118],
            labels[:118],
            validation_data=(ids[118:], labels[118:]),
            epochs=3,
            batch_size=16,
            seed=2,
            mesh=mesh,
            verbose=0,
        )
        results[f"{name}_loss"] = np.asarray(result.history.history["loss"])
        results[f"{name}_val_loss"] = np.asarray(result.history.history["val_loss"])
        for path, leaf in jax.tree_util.tree_leaves_with_path(result.state.params):
            # Replicated: every process can read its own full copy.
            results[f"{name}{jax.tree_util.keystr(path)}"] = np.asarray(leaf.addressable_data(0))
    results["devices"] = np.asarray(jax.device_count())
    if not args.processes or args.process == 0:
        np.savez(args.out, **results)


if __name__ == "__main__":
    main()
