import keras
import numpy as np

rng = np.random.default_rng(0)
x = rng.integers(1, 200, size=(4000, 40))
y = ((x < 30).sum(axis=1) > 5).astype("float32")

model = keras.Sequential(
    [
        keras.layers.Embedding(200, 16),
        keras.layers.LSTM(16),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
)
model.compile(
    optimizer=keras.optimizers.Adam(3e-3),
    loss="binary_crossentropy",
    metrics=["accuracy", keras.metrics.AUC()],
)
history = model.fit(
    x,
    y,
    validation_split=0.2,
    batch_size=64,
    epochs=20,
    callbacks=[
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=3, restore_best_weights=True
        ),
        keras.callbacks.CSVLogger("log.csv"),
    ],
)
print(model.evaluate(x[-800:], y[-800:], return_dict=True))
