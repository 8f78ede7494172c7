import jax
import numpy as np

import rnnjax as rj

rng = np.random.default_rng(0)
x = rng.integers(1, 200, size=(4000, 40))
y = ((x < 30).sum(axis=1) > 5).astype("float32")

config = rj.ModelConfig(200, 16, (rj.LayerSpec("lstm", 16),))
state = rj.TrainState.create(
    model=rj.Classifier(config),
    params=rj.init_params(config, jax.random.key(0)),
    tx=rj.adam(3e-3),
    loss=rj.losses.BinaryCrossentropy(from_logits=True),
    metrics=[rj.metrics.BinaryAccuracy(threshold=0.0), rj.metrics.AUC(from_logits=True)],
)
result = rj.fit(
    state,
    x,
    y,
    validation_split=0.2,
    batch_size=64,
    epochs=20,
    callbacks=[
        rj.EarlyStopping(monitor="val_auc", patience=3, restore_best_weights=True),
        rj.CSVLogger("log.csv"),
    ],
)
print(rj.evaluate(result.state, x[-800:], y[-800:]))
