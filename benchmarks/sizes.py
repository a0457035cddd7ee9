"""Workload sizes, in one place: the floor, gpugrad and every peer read them from here."""

FULL = {
    "small": {"sizes": (64, 64, 64, 10), "batch": 32, "lr": 0.1},  # gpugrad train's shape
    "mlp": {"sizes": (784, 512, 512, 10), "batch": 256, "lr": 0.1},
    "chain": {"steps": 100, "n": 16},
    "bmm": {"shape": (32, 256, 256)},
    "digits": {"hidden": (64, 64), "batch": 32, "lr": 0.01},
    # other shapes (benchmarks/models.py): per-step overhead on small models; each of
    # the floor's products small enough (m * n * k <= 2**18) that OpenBLAS runs it on one thread
    "tanh-mse": {"model": "mlp", "sizes": (64, 64, 64, 10), "act": "tanh", "loss": "mse",
                 "opt": "sgd", "batch": 32, "lr": 0.05},
    "relu-adam": {"model": "mlp", "sizes": (64, 64, 64, 10), "act": "relu", "loss": "xent",
                  "opt": "adam", "batch": 32, "lr": 1e-3},
    "relu-bce": {"model": "mlp", "sizes": (64, 64, 64, 10), "act": "relu", "loss": "bce",
                 "opt": "sgd", "batch": 32, "lr": 0.1},
    "deep": {"model": "mlp", "sizes": (64,) * 9 + (10,), "act": "tanh", "loss": "xent",
             "opt": "sgd", "batch": 32, "lr": 0.05},
    "rnn": {"model": "rnn", "n_in": 16, "hidden": 64, "n_out": 10, "steps": 16, "batch": 32,
            "lr": 0.05},
    "gelu-adamw": {"model": "mlp", "sizes": (64, 64, 64, 10), "act": "gelu", "loss": "xent",
                   "opt": "adamw", "batch": 32, "lr": 1e-3},
    "silu-rmsprop": {"model": "mlp", "sizes": (64, 64, 64, 10), "act": "silu", "loss": "mse",
                     "opt": "rmsprop", "batch": 32, "lr": 1e-3},
    "softplus-momentum": {"model": "mlp", "sizes": (64, 64, 64, 10), "act": "softplus",
                          "loss": "bce", "opt": "momentum", "batch": 32, "lr": 0.05},
    "sigmoid-adagrad": {"model": "mlp", "sizes": (64, 128, 128, 10), "act": "sigmoid",
                        "loss": "bce", "reduction": "sum", "opt": "adagrad", "batch": 16,
                        "lr": 0.01},
    "narrow-sum": {"model": "mlp", "sizes": (64, 32, 32, 10), "act": "tanh", "loss": "xent",
                   "reduction": "sum", "opt": "sgd", "batch": 128, "lr": 0.001},
    "rnn-adam": {"model": "rnn", "n_in": 16, "hidden": 64, "n_out": 10, "steps": 16,
                 "batch": 32, "opt": "adam", "lr": 1e-3},
    "deep-relu-adam": {"model": "mlp", "sizes": (64,) * 9 + (10,), "act": "relu",
                       "loss": "xent", "opt": "adam", "batch": 32, "lr": 1e-3},
}

QUICK = {
    "small": {"sizes": (16, 8, 8, 4), "batch": 4, "lr": 0.1},
    "mlp": {"sizes": (32, 16, 16, 10), "batch": 8, "lr": 0.1},
    "chain": {"steps": 10, "n": 4},
    "bmm": {"shape": (2, 8, 8)},
    "digits": {"hidden": (8,), "batch": 256, "lr": 0.01},
    "tanh-mse": {**FULL["tanh-mse"], "sizes": (8, 8, 8, 4), "batch": 4},
    "relu-adam": {**FULL["relu-adam"], "sizes": (8, 8, 8, 4), "batch": 4},
    "relu-bce": {**FULL["relu-bce"], "sizes": (8, 8, 8, 4), "batch": 4},
    "deep": {**FULL["deep"], "sizes": (8,) * 5 + (4,), "batch": 4},
    "rnn": {**FULL["rnn"], "n_in": 3, "hidden": 8, "n_out": 4, "steps": 4, "batch": 4},
    **{name: {**FULL[name], "sizes": (8, 8, 8, 4), "batch": 4}
       for name in ("gelu-adamw", "silu-rmsprop", "softplus-momentum", "sigmoid-adagrad")},
    "narrow-sum": {**FULL["narrow-sum"], "sizes": (8, 4, 4, 4), "batch": 2},
    "rnn-adam": {**FULL["rnn-adam"], "n_in": 3, "hidden": 8, "n_out": 4, "steps": 4, "batch": 4},
    "deep-relu-adam": {**FULL["deep-relu-adam"], "sizes": (8,) * 5 + (4,), "batch": 4},
}

GPU = {
    "mlp-small": {"sizes": (784, 512, 512, 10), "batch": 256, "lr": 0.1},
    "mlp-large": {"sizes": (1024, 4096, 4096, 10), "batch": 8192, "lr": 0.1},
    "bmm": {"shape": (64, 512, 512)},
}

GPU_QUICK = {
    "small": {"sizes": (16, 8, 8, 4), "batch": 4, "lr": 0.1},
    "mlp-small": QUICK["mlp"],
    "mlp-large": {"sizes": (64, 128, 128, 10), "batch": 64, "lr": 0.1},
    "bmm": {"shape": (2, 16, 16)},
}

REPEATS = {"full": 30, "quick": 3}
DTYPE = "float32"
SEED = 0
