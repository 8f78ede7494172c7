"""Checks shared by the tests of the paths other than the scan (cuDNN, Pallas)."""

import chex
import jax
import jax.numpy as jnp

from rnnjax import Classifier, ModelConfig


def assert_k_models_match_the_scan(
    config: ModelConfig, ids, implementation: str, rng, models: int = 3
) -> None:
    """``models`` classifiers at once (``vmap``) on ``implementation``: logits and every
    parameter gradient equal each model's own scan path, to 1e-5."""
    stacked = jax.vmap(lambda key: Classifier(config).init(key, ids)["params"])(
        jax.random.split(jax.random.key(0), models)
    )
    stacked = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(scale=0.5, size=p.shape), jnp.float32), stacked
    )

    def value_and_grad(implementation):
        model = Classifier(config, implementation=implementation)

        def loss(params):
            logits = model.apply({"params": params}, ids)
            return jnp.sum(jnp.sin(logits)), logits

        return jax.value_and_grad(loss, has_aux=True)

    together = jax.jit(jax.vmap(value_and_grad(implementation)))(stacked)
    scan = jax.jit(value_and_grad("scan"))
    one_by_one = [scan(jax.tree.map(lambda p, k=k: p[k], stacked)) for k in range(models)]
    one_by_one = jax.tree.map(lambda *each: jnp.stack(each), *one_by_one)
    chex.assert_trees_all_close(together, one_by_one, atol=1e-5, rtol=1e-5)
