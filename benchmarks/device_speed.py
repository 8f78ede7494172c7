"""Seconds per epoch on one device: rnnjax's recurrent paths with K models at once against Keras 3
on JAX and PyTorch on the same device, in one invocation within a time budget.

    python benchmarks/device_speed.py [--device gpu|cpu] [--models lstm8,...] [--frameworks ...]
        [--ks 1,8,64] [--epochs 3] [--train-size N] [--val-size M] [--budget-seconds S]
        [--rnnjax-python PY] [--keras-jax-python PY] [--torch-python PY]
        [--json OUT.json] [--markdown OUT.md]

Run it with rnnjax's interpreter. The models, workers and synthetic arrays are ``speed.py``'s
(IMDB- and Reuters-shaped ids), cut to ``--train-size``/``--val-size`` examples so that a whole
run fits a few minutes; the recipe is ``speed.py``'s (RMSprop 1e-4, batch 64, validation every
epoch). Frameworks:

* ``rnnjax-scan``, ``rnnjax-cudnn``, ``rnnjax-pallas``: ``Classifier(implementation=...)``
  trained with ``fit`` (K = 1) or, for K > 1, K models in one vmapped program
  (``fit_ensemble``); the epoch is all K models' epoch.
* ``keras-jax``: Keras 3 on JAX, ``fit``; ``torch``: ``nn.LSTM``/``nn.GRU`` in the usual loop
  (cuDNN on a GPU). The peers train one model per process (K = 1 only): they have no equivalent
  of a vmap over models, so compare them per model-epoch.

Jobs run one at a time, each in a fresh process: every K = 1 job first, then the larger K in
ascending order, so a spent budget cuts the largest K first; jobs left when it is spent are
recorded as skipped. A path that cannot run a model (cuDNN: LSTM layers on a GPU only; Pallas:
not timed on CPU, where only its interpreter runs) is skipped with the reason. The table gives
the first epoch (compilation included), the median of the others, the seconds per model-epoch
and its ratio to Keras-on-JAX's (below 1: faster); the JSON keeps every epoch, versions and the
command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
import tempfile
import time

import numpy as np
import speed
import speed_data

DEFAULT_MODELS = ("lstm8", "gru8", "stacked_lstm8", "lstm32", "reuters_lstm100")
# A job needs at least this much of the budget to be started.
MIN_JOB_SECONDS = 15.0


def frameworks(device: str) -> dict[str, speed.Framework]:
    """The frameworks for ``device`` ('gpu', 'tpu' or 'cpu'): rnnjax's three paths and two
    peers."""
    env = speed.CPU if device == "cpu" else {}
    rnnjax_env = env | {"PYTHONPATH": speed.REPO}

    def rnnjax(implementation: str) -> speed.Framework:
        return speed.Framework(
            "rnnjax_worker.py", "rnnjax_python", rnnjax_env, {"implementation": implementation}
        )

    return {
        "rnnjax-scan": rnnjax("scan"),
        "rnnjax-cudnn": rnnjax("cudnn"),
        "rnnjax-pallas": rnnjax("pallas"),
        "keras-jax": speed.Framework(
            "keras_worker.py", "keras_jax_python", env | {"KERAS_BACKEND": "jax"}
        ),
        "torch": speed.Framework(
            "torch_worker.py",
            "torch_python",
            env,
            {"device": "cuda" if device == "gpu" else "cpu"},
            lacks=speed.FRAMEWORKS["torch"].lacks,
        ),
    }


def cannot_run(
    name: str, framework: speed.Framework, model: speed.Model, device: str
) -> str | None:
    """Why ``framework`` skips ``model`` on ``device``, or None."""
    if name == "rnnjax-cudnn":
        if device != "gpu":
            return "cuDNN needs a GPU"
        if any(layer.kind != "lstm" for layer in model.layers):
            return "the cuDNN path runs LSTM layers only"
    if name == "rnnjax-pallas" and device == "cpu":
        return "on CPU Pallas only interprets (for tests): not timed"
    if name == "torch" and device == "tpu":
        return "this benchmark runs PyTorch on CPU or CUDA only"
    if name in ("rnnjax-cudnn", "rnnjax-pallas") and "recurrent_dropout" in model.features():
        return "no recurrent dropout on this path"
    return framework.cannot_run(model)


def probe(names: list[str], table: dict[str, speed.Framework], args) -> dict[str, dict]:
    """``{framework: {"python", "versions"} | {"skipped": why}}``."""
    found = {}
    for name in names:
        framework = table[name]
        python = getattr(args, framework.flag)
        if not python:
            found[name] = {"skipped": f"no --{framework.flag.replace('_', '-')} given"}
            continue
        try:
            versions = speed.call_worker(framework, python, "--versions", timeout=300)
            found[name] = {"python": python, "versions": versions}
        except (OSError, speed.WorkerError) as error:
            found[name] = {"python": python, "skipped": f"{python}: {error}"}
    return found


def jobs(args) -> list[tuple[int, str, str]]:
    """``(K, model, framework)`` in running order: all K = 1 jobs, then each larger K."""
    return [
        (k, model, name)
        for k in sorted(set(args.ks))
        for model in args.models
        for name in args.frameworks
        if k == 1 or name.startswith("rnnjax")
    ]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def table(results: list[dict]) -> str:
    """The markdown table of every result, with each row's per-model ratio to Keras-on-JAX."""
    keras = {
        r["model"]: r["per_model"]
        for r in results
        if r["framework"] == "keras-jax" and r.get("per_model")
    }
    rows = [
        "| model | framework | K | first epoch s (incl. compile) | median s/epoch | "
        "s per model-epoch | per model vs Keras-on-JAX | val loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        head = f"| {r['model']} | {r['framework']} | {r['k']} |"
        if "error" in r or "skipped" in r:
            word = "failed" if "error" in r else "skipped"
            rows.append(f"{head} {word}: {r.get('error') or r['skipped']} | | | | |")
            continue
        ratio = ""
        if r["per_model"] and keras.get(r["model"]) and r["framework"] != "keras-jax":
            ratio = f"{r['per_model'] / keras[r['model']]:.2f}"
        rows.append(
            f"{head} {_seconds(r['first_epoch'])} | {_seconds(r['median'])} | "
            f"{_seconds(r['per_model'])} | {ratio} | {r['val_loss']:.4f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "tpu", "cpu"), default="gpu")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument(
        "--frameworks", default="rnnjax-scan,rnnjax-cudnn,rnnjax-pallas,keras-jax,torch"
    )
    parser.add_argument("--ks", default="1,8,64", help="models at once for rnnjax, e.g. 1,8,64")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2 for a median)")
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--val-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-seconds", type=float, default=300.0)
    parser.add_argument("--rnnjax-python", default=sys.executable)
    parser.add_argument("--keras-jax-python", help="interpreter with keras and jax")
    parser.add_argument("--torch-python", help="interpreter with torch")
    parser.add_argument("--json", default="runs/device_speed.json")
    parser.add_argument("--markdown", default="runs/device_speed.md")
    args = parser.parse_args(argv)
    args.models = args.models.split(",")
    args.frameworks = args.frameworks.split(",")
    known = frameworks(args.device)
    for option, names, choices in (
        ("models", args.models, speed.MODELS),
        ("frameworks", args.frameworks, known),
    ):
        unknown = sorted(set(names) - set(choices))
        if unknown:
            parser.error(f"unknown {option} {', '.join(unknown)}; use {', '.join(choices)}")
    args.ks = [int(k) for k in args.ks.split(",")]
    if min(args.ks) < 1 or args.epochs < 1 or min(args.train_size, args.val_size) < 1:
        parser.error("--ks, --epochs, --train-size and --val-size must be >= 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_seconds
    known = frameworks(args.device)
    found = probe(args.frameworks, known, args)
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "device": args.device,
        "machine": speed.machine(),
        "frameworks": found,
        "recipe": {
            "optimizer": "rmsprop",
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "seed": args.seed,
            "train_size": args.train_size,
            "val_size": args.val_size,
        },
        "budget_seconds": args.budget_seconds,
        "results": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = {}
        for dataset in dict.fromkeys(speed.MODELS[name].dataset for name in args.models):
            shape = dataclasses.replace(
                speed_data.SHAPES[dataset], num_train=args.train_size, num_val=args.val_size
            )
            data[dataset] = os.path.join(tmp, f"{dataset}.npz")
            np.savez(data[dataset], **speed_data.synthetic(shape, args.seed))
        for k, model_name, name in jobs(args):
            model = speed.MODELS[model_name]
            result = {"model": model_name, "framework": name, "k": k}
            left = deadline - time.monotonic()
            if "skipped" in found[name]:
                result["skipped"] = found[name]["skipped"]
            elif reason := cannot_run(name, known[name], model, args.device):
                result["skipped"] = reason
            elif left < MIN_JOB_SECONDS:
                result["skipped"] = "time budget spent"
            else:
                job = {
                    "data": data[model.dataset],
                    "model": model.job_model(),
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "learning_rate": args.learning_rate,
                    "seed": args.seed,
                    "options": known[name].options,
                    "models_at_once": k,
                }
                try:
                    answer = speed.call_worker(
                        known[name], found[name]["python"], json.dumps(job), timeout=left
                    )
                except speed.WorkerError as error:
                    result["error"] = str(error)
                else:
                    first, median = speed.summarize(answer["epoch_seconds"])
                    per_model = None if median is None else median / k
                    result |= answer | {
                        "first_epoch": first,
                        "median": median,
                        "per_model": per_model,
                    }
            outcome = result.get("error") or result.get("skipped") or _seconds(result["median"])
            print(f"{model_name} {name} K={k}: {outcome}", file=sys.stderr)
            report["results"].append(result)
    report["seconds"] = time.monotonic() - started
    markdown = table(report["results"])
    for path, text in ((args.json, json.dumps(report, indent=1)), (args.markdown, markdown + "\n")):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    print(markdown)
    outcomes = [
        "failed" if "error" in r else "skipped" if "skipped" in r else "timed"
        for r in report["results"]
    ]
    print(
        f"{len(outcomes)} jobs: {outcomes.count('timed')} timed, {outcomes.count('skipped')} "
        f"skipped, {outcomes.count('failed')} failed; {report['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
