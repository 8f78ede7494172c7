"""``python -m experiments``: lists the recipes."""

import importlib
import pkgutil

import experiments


def recipes():
    """``(name, Experiment)`` for every recipe module, sorted by name."""
    found = []
    for module in pkgutil.iter_modules(experiments.__path__):
        if not module.name.startswith("_"):
            found.append(
                (module.name, importlib.import_module(f"experiments.{module.name}").EXPERIMENT)
            )
    return sorted(found)


if __name__ == "__main__":
    for name, experiment in recipes():
        print(f"{name:22s} {experiment.description}")
    print("\nrun one with: python -m experiments.<name> [--epochs N] [--summary] [--help]")
