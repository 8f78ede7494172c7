"""Seconds per epoch of rnnjax and its peers on the same arrays and recipe, in one invocation.

    python benchmarks/speed.py [--epochs 5] [--models lstm8,gru8,...] [--frameworks rnnjax,...]
        [--keras-jax-python PY] [--keras-tf-python PY] [--torch-python PY]
        [--rnnjax-python PY] [--rnnjax-hoist true|false] [--torch-threads N] [--json OUT.json]
        [--real-data [--data-dir DIR] [--manual-dir DIR]]

Run it with rnnjax's interpreter (numpy; rnnjax itself for ``--real-data``). The arrays are made
once and saved to a temporary ``.npz``; then every (model, framework) pair trains in a fresh
process of that framework's interpreter, one after another, never in parallel, on the CPU
(``JAX_PLATFORMS=cpu``, no CUDA devices): RMSprop(1e-4, rho 0.9, eps 1e-7), batch 64, a shuffle
per epoch, validation after every epoch. A peer whose interpreter is not given or cannot import
its framework is skipped, with the reason in the table. The table gives, per model and
framework, the first epoch (compilation included), the median of the other epochs and
rnnjax's median over the peer's (below 1: rnnjax is faster); the JSON file keeps every epoch,
the final losses, versions, the machine and the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # --real-data loads with this checkout's rnnjax

import numpy as np  # noqa: E402
import speed_data  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Layer:
    """A recurrent layer in Keras' terms: ``LSTM/GRU(units, dropout=, recurrent_dropout=)``,
    wrapped in ``Bidirectional`` (concatenating) if asked."""

    kind: str  # "lstm" or "gru"
    units: int
    bidirectional: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0


@dataclasses.dataclass(frozen=True)
class Model:
    """``Embedding(V, embed_dim, mask_zero=) -> layers -> Dense`` on the arrays of ``dataset``;
    every layer but the last returns sequences."""

    dataset: str
    embed_dim: int
    layers: tuple[Layer, ...]
    mask_zero: bool = False

    def features(self) -> set[str]:
        """What the model uses beyond plain layers: the keys of ``Framework.lacks``."""
        used = {"mask_zero"} if self.mask_zero else set()
        for layer in self.layers:
            used |= {"bidirectional"} if layer.bidirectional else set()
            used |= {"dropout"} if layer.dropout else set()
            used |= {"recurrent_dropout"} if layer.recurrent_dropout else set()
        return used

    def job_model(self) -> dict:
        shape = speed_data.SHAPES[self.dataset]
        return {
            "vocab_size": shape.num_words,
            "embed_dim": self.embed_dim,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "mask_zero": self.mask_zero,
            "num_classes": shape.num_classes,
        }


MODELS = {
    "lstm8": Model("imdb", 16, (Layer("lstm", 8),)),
    "gru8": Model("imdb", 16, (Layer("gru", 8),)),
    "stacked_lstm8": Model("imdb", 16, (Layer("lstm", 8), Layer("lstm", 8))),
    "masked_lstm8": Model("imdb", 16, (Layer("lstm", 8),), mask_zero=True),
    "bidirectional_lstm8": Model("imdb", 16, (Layer("lstm", 8, bidirectional=True),)),
    "recurrent_dropout_lstm8": Model(
        "imdb", 16, (Layer("lstm", 8, dropout=0.2, recurrent_dropout=0.2),)
    ),
    "lstm32": Model("imdb", 32, (Layer("lstm", 32),)),
    "gru32": Model("imdb", 32, (Layer("gru", 32),)),
    "reuters_lstm100": Model("reuters", 100, (Layer("lstm", 100),)),
}


@dataclasses.dataclass(frozen=True)
class Framework:
    """A worker script, the environment it runs in and its job options; ``flag`` names the
    interpreter option; ``lacks`` maps the model features (``Model.features``) the framework has
    no equivalent for to why, and models using them are skipped."""

    worker: str
    flag: str
    env: dict[str, str]
    options: dict = dataclasses.field(default_factory=dict)
    lacks: dict[str, str] = dataclasses.field(default_factory=dict)

    def cannot_run(self, model: Model) -> str | None:
        """Why this framework skips ``model``, or None."""
        missing = sorted(model.features() & self.lacks.keys())
        return "; ".join(self.lacks[feature] for feature in missing) or None


# Every run is on the CPU, the machine the issue measures. rnnjax's worker imports rnnjax from
# this checkout, not from whatever its interpreter has installed.
CPU = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
FRAMEWORKS = {
    "rnnjax": Framework(
        "rnnjax_worker.py", "rnnjax_python", CPU | {"PYTHONPATH": REPO}, {"implementation": "auto"}
    ),
    # rnnjax without the fused CPU kernels: its scan path, for the kernels' own speed-up.
    "rnnjax-scan": Framework(
        "rnnjax_worker.py", "rnnjax_python", CPU | {"PYTHONPATH": REPO}, {"implementation": "scan"}
    ),
    "flax": Framework(
        "flax_worker.py",
        "rnnjax_python",
        CPU,
        lacks={
            "mask_zero": "nn.RNN masks by seq_lengths, i.e. 'post' padding only; the ids are "
            "'pre'-padded",
            "dropout": "Flax's cells take no dropout",
            "recurrent_dropout": "Flax's cells have no recurrent dropout",
        },
    ),
    "keras-jax": Framework("keras_worker.py", "keras_jax_python", CPU | {"KERAS_BACKEND": "jax"}),
    "keras-tf": Framework(
        "keras_worker.py",
        "keras_tf_python",
        CPU | {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
    ),
    "torch": Framework(
        "torch_worker.py",
        "torch_python",
        CPU,
        lacks={
            "mask_zero": "torch packs padded sequences by length, i.e. 'post' padding only; "
            "the ids are 'pre'-padded",
            "dropout": "torch.nn.LSTM's dropout acts between stacked layers, not on the inputs",
            "recurrent_dropout": "torch.nn.LSTM has no recurrent dropout",
        },
    ),
}


class WorkerError(RuntimeError):
    pass


def call_worker(
    framework: Framework, python: str, argument: str, timeout: float | None = None
) -> dict:
    """Runs one worker process to its end (or ``timeout`` seconds); its last stdout line is the
    JSON answer."""
    env = os.environ | framework.env
    if "PYTHONPATH" in framework.env and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = framework.env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
    try:
        done = subprocess.run(
            [python, os.path.join(HERE, "workers", framework.worker), argument],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise WorkerError(f"stopped after {timeout:.0f} s (time budget)") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise WorkerError(errors[-1])
    return json.loads(lines[-1])


def probe(names: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """``{framework: {"python", "versions"} | {"skipped": why}}`` for the requested frameworks."""
    found = {}
    for name in names:
        framework = FRAMEWORKS[name]
        python = getattr(args, framework.flag)
        if not python:
            found[name] = {"skipped": f"no --{framework.flag.replace('_', '-')} given"}
            continue
        try:
            found[name] = {
                "python": python,
                "versions": call_worker(framework, python, "--versions"),
            }
        except OSError as error:
            found[name] = {"python": python, "skipped": f"{python}: {error.strerror}"}
        except WorkerError as error:
            found[name] = {"python": python, "skipped": f"{python}: {error}"}
    return found


def summarize(seconds: list[float]) -> tuple[float, float | None]:
    """First epoch (compilation included) and the median of the others (None after one epoch)."""
    return seconds[0], statistics.median(seconds[1:]) if len(seconds) > 1 else None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "load_average": os.getloadavg(),
    }


def seconds_cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(results: list[dict], frameworks: dict[str, dict]) -> str:
    rows = [
        "| model | framework | first epoch s (incl. compile) | median s/epoch (others) "
        "| rnnjax/peer | val loss |",
        "|---|---|---|---|---|---|",
    ]
    medians = {r["model"]: r.get("median") for r in results if r["framework"] == "rnnjax"}
    for r in results:
        if "error" in r:
            rows.append(f"| {r['model']} | {r['framework']} | failed: {r['error']} | | | |")
            continue
        if "skipped" in r:
            rows.append(f"| {r['model']} | {r['framework']} | skipped: {r['skipped']} | | | |")
            continue
        ours, theirs = medians.get(r["model"]), r["median"]
        peer = r["framework"] != "rnnjax" and ours and theirs
        ratio = f"{ours / theirs:.2f}" if peer else ""
        rows.append(
            f"| {r['model']} | {r['label']} | {seconds_cell(r['first_epoch'])} | "
            f"{seconds_cell(theirs)} | {ratio} | {r['val_loss']:.4f} |"
        )
    for name, found in frameworks.items():
        if "skipped" in found:
            rows.append(f"| all | {name} | skipped: {found['skipped']} | | | |")
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (>= 2 for a median)")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS)
    )
    parser.add_argument(
        "--frameworks",
        default=",".join(FRAMEWORKS),
        help="comma-separated, of: " + ", ".join(FRAMEWORKS),
    )
    parser.add_argument(
        "--rnnjax-python",
        default=sys.executable,
        help="interpreter with rnnjax's dependencies (also runs flax); default: this one",
    )
    parser.add_argument("--keras-jax-python", help="interpreter with keras and jax")
    parser.add_argument("--keras-tf-python", help="interpreter with keras and tensorflow")
    parser.add_argument("--torch-python", help="interpreter with torch")
    parser.add_argument(
        "--rnnjax-hoist",
        choices=("true", "false"),
        default="true",
        help="Classifier(hoist_input_projection=...)",
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads (default: every core)"
    )
    parser.add_argument(
        "--real-data",
        action="store_true",
        help="the tutorials' own arrays instead of synthetic ones",
    )
    parser.add_argument(
        "--data-dir",
        help="with --real-data: the TFDS data dir (default: "
        "$TFDS_DATA_DIR); Reuters must be prepared there or in --manual-dir",
    )
    parser.add_argument("--manual-dir", help="with --real-data: where reuters21578.tar.gz lies")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", help="where the raw numbers go (default: runs/speed/<UTC time>.json)"
    )
    args = parser.parse_args(argv)
    for option, choices in (("models", MODELS), ("frameworks", FRAMEWORKS)):
        names = getattr(args, option).split(",")
        unknown = sorted(set(names) - set(choices))
        if unknown:
            parser.error(f"unknown {option} {', '.join(unknown)}; use {', '.join(choices)}")
        setattr(args, option, names)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    json_path = args.json or os.path.join(
        "runs", "speed", started.strftime("%Y%m%dT%H%M%SZ") + ".json"
    )
    frameworks = probe(args.frameworks, args)
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": started.isoformat(),
        "machine": machine(),
        "frameworks": frameworks,
        "recipe": {
            "optimizer": "rmsprop",
            "learning_rate": args.learning_rate,
            "rho": 0.9,
            "epsilon": 1e-7,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "seed": args.seed,
        },
        "data": "real" if args.real_data else "synthetic",
        "results": [],
    }
    print(
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores, load average "
        f"{report['machine']['load_average'][0]:.2f}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        data_paths = {}
        for dataset in dict.fromkeys(MODELS[name].dataset for name in args.models):
            arrays = (
                speed_data.real(dataset, args.data_dir, args.manual_dir)
                if args.real_data
                else speed_data.synthetic(speed_data.SHAPES[dataset], args.seed)
            )
            data_paths[dataset] = os.path.join(tmp, f"{dataset}.npz")
            np.savez(data_paths[dataset], **arrays)
            report.setdefault("shapes", {})[dataset] = {k: list(v.shape) for k, v in arrays.items()}
        for model_name in args.models:
            model = MODELS[model_name]
            for name, found in frameworks.items():
                if "skipped" in found:
                    continue
                if reason := FRAMEWORKS[name].cannot_run(model):
                    report["results"].append(
                        {"model": model_name, "framework": name, "skipped": reason}
                    )
                    continue
                options = FRAMEWORKS[name].options | {
                    "rnnjax": {"hoist": args.rnnjax_hoist == "true"},
                    "rnnjax-scan": {"hoist": args.rnnjax_hoist == "true"},
                    "torch": {"threads": args.torch_threads},
                }.get(name, {})
                job = {
                    "data": data_paths[model.dataset],
                    "model": model.job_model(),
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "learning_rate": args.learning_rate,
                    "seed": args.seed,
                    "options": options,
                }
                label = f"{name} (hoist=false)" if options.get("hoist") is False else name
                result = {
                    "model": model_name,
                    "framework": name,
                    "label": label,
                    "load_average": os.getloadavg(),
                }
                start = time.perf_counter()
                try:
                    answer = call_worker(FRAMEWORKS[name], found["python"], json.dumps(job))
                except WorkerError as error:
                    result["error"] = str(error)
                    print(f"{model_name} {name}: failed: {error}", file=sys.stderr)
                else:
                    first, median = summarize(answer["epoch_seconds"])
                    result |= answer | {
                        "first_epoch": first,
                        "median": median,
                        "process_seconds": time.perf_counter() - start,
                    }
                    print(
                        f"{model_name} {label}: first epoch {first:.2f} s, median "
                        f"{seconds_cell(median)} s",
                        file=sys.stderr,
                    )
                report["results"].append(result)
    report["machine"]["load_average_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    print(table(report["results"], frameworks))
    print(
        f"\n{report['machine']['cpu']}, {report['machine']['cores']} cores; {args.epochs} epochs "
        f"of {report['data']} data; rnnjax/peer < 1: rnnjax is faster; raw numbers: {json_path}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
