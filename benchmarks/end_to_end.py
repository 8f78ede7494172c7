"""A recipe's command end to end, rnnjax against the same recipe in Keras 3 on JAX, in one
invocation: process start to exit, trained to early stop with the data cached, and where
rnnjax's seconds go.

    python benchmarks/end_to_end.py --keras-python PY [--recipe imdb_lstm] [--repeats 1]
        [--without-checkpoints] [--epochs N] [--data-dir DIR] [--manual-dir DIR] [--json OUT]

Run it with rnnjax's interpreter. It first makes ready what a user's second run finds ready and
says so: the data cache, warmed by exporting the recipe's padded train/validation/test arrays
with rnnjax's loader to a temporary ``.npz`` (which the Keras side then trains on, so both train
on the same arrays), and the fused CPU kernels' build. Then, one process at a time, on the CPU:

1. rnnjax: ``python -m experiments.<recipe> --quiet --workdir <tmp>``, timed from just before
   its process starts to its exit, and by its CPU seconds (all threads);
2. Keras 3 on JAX: ``workers/keras_recipe.py`` in the ``--keras-python`` interpreter, the same
   recipe on the same arrays (Embedding -> LSTM/GRU -> Dense, RMSprop, cross-entropy, batch size,
   EarlyStopping(val_loss, patience, restore_best_weights=True), ModelCheckpoint(save_best_only=
   True), evaluate on train/validation/test), timed the same way;
3. rnnjax once more under ``workers/rnnjax_phases.py``: the same command in one process with a
   clock on its phases, for the breakdown of its seconds;
4. with ``--without-checkpoints``: 3. without ModelCheckpoint and BackupAndRestore, for their
   cost per epoch (they do not change the training, so the epochs are the same).

``--repeats N`` repeats the rounds; the tables give medians. ``--epochs N`` caps the epochs (a
quick check; by default the recipe's, so both sides early-stop). The JSON file keeps every run,
the machine, its load average before each run, and the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # rnnjax and experiments from this checkout

import numpy as np  # noqa: E402
from speed import CPU, FRAMEWORKS, Framework, WorkerError, call_worker, machine  # noqa: E402

KERAS = Framework("keras_recipe.py", "keras_python", FRAMEWORKS["keras-jax"].env)
RNNJAX_ENV = CPU | {
    "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
}
CHECKPOINTS = "ModelCheckpoint,BackupAndRestore"


def recipe_model(experiment) -> dict:
    """The Keras worker's model spec (``workers/common.py``), for a recipe it can build."""
    from rnnjax.models import LayerSpec

    model, train = experiment.model, experiment.train
    plain = all(layer == LayerSpec(layer.kind, layer.units) for layer in model.layers)
    if not plain or model.mask_zero or train.optimizer != "rmsprop":
        raise SystemExit(
            f"{experiment.name}: the Keras worker builds plain LSTM/GRU layers trained with "
            "RMSprop; pick a recipe without dropout, bidirectional layers, masking or Adam"
        )
    return {
        "vocab_size": model.vocab_size,
        "embed_dim": model.embed_dim,
        "layers": [[layer.kind, layer.units] for layer in model.layers],
        "num_classes": model.num_classes,
    }


def export_arrays(experiment, args, path: str) -> dict[str, list[int]]:
    """The recipe's padded splits from rnnjax's loader, saved to ``path`` (this warms the data
    cache); returns their shapes."""
    from rnnjax.experiment import load_splits

    splits = load_splits(experiment.data, args.data_dir, args.manual_dir)
    arrays = {}
    for name, (x, y) in (
        ("train", splits.train),
        ("val", splits.validation),
        ("test", splits.test),
    ):
        arrays[f"x_{name}"], arrays[f"y_{name}"] = x, y
    np.savez(path, **arrays)
    return {name: list(a.shape) for name, a in arrays.items()}


def recipe_flags(args) -> list[str]:
    """The recipe command's flags for the benchmark's options."""
    flags = [] if args.epochs is None else ["--epochs", str(args.epochs)]
    for name in ("data_dir", "manual_dir"):
        if getattr(args, name):
            flags += [f"--{name.replace('_', '-')}", getattr(args, name)]
    return flags


def run_process(command: list[str], env: dict, cwd: str) -> tuple[float, dict]:
    """Runs ``command`` to its end; ``(time.time() at its start, its seconds)``. The start is
    also given to it as ``$RNNJAX_BENCH_START``."""
    started = time.time()
    with child_seconds() as seconds:
        done = subprocess.run(
            command,
            env=os.environ | env | {"RNNJAX_BENCH_START": repr(started)},
            cwd=cwd,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        errors = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise SystemExit(f"{shlex.join(command)} failed: {errors[-1]}")
    return started, seconds


@contextlib.contextmanager
def child_seconds():
    """``{"wall", "cpu"}`` of the child processes run inside: wall seconds, and CPU seconds
    (user + system, all threads), which other work on the machine disturbs less."""
    seconds = {}
    before, clock = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    yield seconds
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds["wall"] = time.perf_counter() - clock
    seconds["cpu"] = sum(getattr(after, f) - getattr(before, f) for f in ("ru_utime", "ru_stime"))


def rnnjax_outcome(workdir: str) -> dict:
    """Epochs, best epoch, test accuracy and epoch seconds of a finished recipe run."""
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(workdir, "history.json")) as f:
        epochs = json.load(f)["epochs"]
    return {
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "test_accuracy": metrics["test_accuracy"],
        "epoch_seconds": [e["seconds"] for e in epochs],
    }


def run_rnnjax(recipe: str, args, tmp: str) -> dict:
    workdir = tempfile.mkdtemp(dir=tmp)
    command = [sys.executable, "-m", f"experiments.{recipe}", "--quiet", "--workdir", workdir]
    _, seconds = run_process(command + recipe_flags(args), RNNJAX_ENV, REPO)
    return seconds | {"command": shlex.join(command)} | rnnjax_outcome(workdir)


def run_phases(recipe: str, args, tmp: str, without: str | None = None) -> dict:
    """``workers/rnnjax_phases.py``: the recipe's phases, plus the interpreter's start, the
    imports and its exit from the clock readings around them."""
    workdir, out = tempfile.mkdtemp(dir=tmp), os.path.join(tmp, "phases.json")
    command = [sys.executable, os.path.join(HERE, "workers", "rnnjax_phases.py"), out, recipe]
    command += ["--without", without] if without else []
    command += ["--quiet", "--workdir", workdir, *recipe_flags(args)]
    started, process = run_process(command, RNNJAX_ENV, REPO)
    with open(out) as f:
        phases = json.load(f)
    before = {
        "interpreter start": phases["interpreter_ready"] - started,
        "imports (rnnjax, jax, flax, optax, orbax, tfds, experiment)": phases["main_started"]
        - phases["interpreter_ready"],
    }
    after = {"exit (interpreter shutdown)": started + process["wall"] - phases["main_ended"]}
    return (
        process
        | {
            "seconds": before | phases["seconds"] | after,
            "compile_seconds": phases["compile_seconds"],
            "calls": phases["calls"],
        }
        | rnnjax_outcome(workdir)
    )


def run_keras(python: str, job: dict) -> dict:
    started = time.time()
    try:
        with child_seconds() as seconds:
            answer = call_worker(KERAS, python, json.dumps(job | {"started": started}))
    except WorkerError as error:
        raise SystemExit(f"Keras worker failed: {error}") from None
    answer["seconds"]["exit (interpreter shutdown)"] = started + seconds["wall"] - answer["ended"]
    return answer | seconds | {"test_accuracy": answer["metrics"]["test_accuracy"]}


def median(runs: list[dict], *keys) -> float:
    values = []
    for run in runs:
        for key in keys:
            run = run[key]
        values.append(run)
    return statistics.median(values)


def summary_table(rounds: list[dict]) -> str:
    ours = [r["rnnjax"] for r in rounds]
    keras = [r["keras"] for r in rounds]

    def row(label, fn):
        return f"| {label} | {fn(ours)} | {fn(keras)} |"

    ratio = statistics.median(r["rnnjax"]["wall"] / r["keras"]["wall"] for r in rounds)
    return "\n".join(
        [
            "| | rnnjax | Keras 3 on JAX |",
            "|---|---|---|",
            row("wall s, process start to exit", lambda runs: f"{median(runs, 'wall'):.1f}"),
            row("CPU s, user + system, all threads", lambda runs: f"{median(runs, 'cpu'):.1f}"),
            row(
                "epochs run (best epoch)",
                lambda runs: "/".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in runs),
            ),
            row(
                "s per epoch, median (training + validation)",
                lambda runs: (
                    f"{statistics.median(s for r in runs for s in r['epoch_seconds']):.2f}"
                ),
            ),
            row(
                "wall s per epoch run",
                lambda runs: f"{statistics.median(r['wall'] / r['epochs_run'] for r in runs):.2f}",
            ),
            row("test accuracy", lambda runs: "/".join(f"{r['test_accuracy']:.4f}" for r in runs)),
            f"| **rnnjax / Keras-on-JAX, wall** | **{ratio:.2f}** | |",
        ]
    )


def breakdown_table(runs: list[dict]) -> str:
    phases = list(dict.fromkeys(name for run in runs for name in run["seconds"]))
    total = median(runs, "wall")
    rows = ["| phase | s | share | of which compiling |", "|---|---|---|---|"]
    for name in phases:
        seconds = statistics.median(run["seconds"].get(name, 0.0) for run in runs)
        compiled = statistics.median(run["compile_seconds"].get(name, 0.0) for run in runs)
        compiling = f"{compiled:.2f}" if compiled >= 0.005 else ""
        rows.append(f"| {name} | {seconds:.2f} | {seconds / total:.0%} | {compiling} |")
    accounted = statistics.median(sum(run["seconds"].values()) for run in runs)
    rows.append(f"| unaccounted | {total - accounted:.2f} | {(total - accounted) / total:.0%} | |")
    rows.append(f"| **total (wall)** | **{total:.2f}** | | |")
    return "\n".join(rows)


def keras_table(runs: list[dict]) -> str:
    total = median(runs, "wall")
    rows = ["| phase | s | share |", "|---|---|---|"]
    for name in runs[0]["seconds"]:
        seconds = median(runs, "seconds", name)
        rows.append(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")
    first = statistics.median(r["epoch_seconds"][0] for r in runs)
    rows.append(f"| (of fit: first epoch incl. compile) | {first:.2f} | |")
    rows.append(f"| **total (wall)** | **{total:.2f}** | |")
    return "\n".join(rows)


def checkpoint_line(rounds: list[dict]) -> str:
    def per_epoch(fn) -> float:
        return statistics.median(
            fn(r["phases"], r["phases_without_checkpoints"]) / r["phases"]["epochs_run"]
            for r in rounds
        )

    own = per_epoch(lambda with_, _: with_["seconds"]["checkpoints: save, seal, close"])
    wall = per_epoch(lambda with_, without: with_["wall"] - without["wall"])
    cpu = per_epoch(lambda with_, without: with_["cpu"] - without["cpu"])
    return (
        f"ModelCheckpoint + BackupAndRestore, per epoch: {own:.3f} s in their own calls (saving, "
        f"sealing, closing); with them minus without: {wall:.3f} s wall, {cpu:.3f} s CPU"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras-python", required=True, help="interpreter with keras and jax")
    parser.add_argument("--recipe", default="imdb_lstm", help="an experiments/ module")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; tables give medians")
    parser.add_argument(
        "--without-checkpoints",
        action="store_true",
        help=f"also time the phases run without {CHECKPOINTS}",
    )
    parser.add_argument(
        "--epochs", type=int, help="at most this many epochs (default: the recipe's, to early stop)"
    )
    parser.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    parser.add_argument("--manual-dir", help="where a dataset's archive lies")
    parser.add_argument("--json", help="raw numbers (default runs/end_to_end/<UTC time>.json)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    json_path = args.json or os.path.join(
        "runs", "end_to_end", started.strftime("%Y%m%dT%H%M%SZ") + ".json"
    )
    from rnnjax import fused

    experiment = importlib.import_module(f"experiments.{args.recipe}").EXPERIMENT
    model = recipe_model(experiment)
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": started.isoformat(),
        "machine": machine(),
        "recipe": experiment.to_dict(),
        "rounds": [],
    }
    print(
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores, load average "
        f"{report['machine']['load_average'][0]:.2f}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npz")
        report["shapes"] = export_arrays(experiment, args, data)
        report["fused_kernels"] = fused.available() or fused.unavailable_reason()
        print(
            "warmed: the data cache (arrays exported with rnnjax's loader) and the fused CPU "
            "kernels' build",
            file=sys.stderr,
        )
        train = experiment.train
        job = {
            "data": data,
            "model": model,
            "epochs": args.epochs or train.epochs,
            "batch_size": train.batch_size,
            "learning_rate": train.learning_rate,
            "patience": train.patience,
            "seed": train.seed,
        }
        runs = {
            "rnnjax": lambda: run_rnnjax(args.recipe, args, tmp),
            "keras": lambda: run_keras(
                args.keras_python, job | {"workdir": tempfile.mkdtemp(dir=tmp)}
            ),
            "phases": lambda: run_phases(args.recipe, args, tmp),
        }
        if args.without_checkpoints:
            runs["phases_without_checkpoints"] = lambda: run_phases(
                args.recipe, args, tmp, CHECKPOINTS
            )
        for repeat in range(args.repeats):
            current = {}
            for name, run in runs.items():
                load = os.getloadavg()
                current[name] = run() | {"load_average": load}
                print(
                    f"round {repeat + 1} {name}: {current[name]['wall']:.1f} s, "
                    f"{current[name]['epochs_run']} epochs (load average {load[0]:.2f})",
                    file=sys.stderr,
                )
            report["rounds"].append(current)
    report["machine"]["load_average_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    rounds = report["rounds"]
    print(f"## {args.recipe} end to end\n\n{summary_table(rounds)}\n")
    print("## Where rnnjax's seconds go (its command under workers/rnnjax_phases.py)\n")
    print(breakdown_table([r["phases"] for r in rounds]) + "\n")
    print(f"## Keras 3 on JAX, by phase\n\n{keras_table([r['keras'] for r in rounds])}\n")
    if args.without_checkpoints:
        print(checkpoint_line(rounds) + "\n")
    print(
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores, load average "
        f"{report['machine']['load_average'][0]:.2f} at the start, "
        f"{report['machine']['load_average_end'][0]:.2f} at the end; {args.repeats} round(s), "
        f"medians; data cache and kernel build warm; raw numbers: {json_path}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
