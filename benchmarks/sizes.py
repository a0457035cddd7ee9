"""Workload sizes, in one place: the floor, gpugrad and every peer read them from here."""

FULL = {
    "small": {"sizes": (64, 64, 64, 10), "batch": 32, "lr": 0.1},  # gpugrad train's shape
    "mlp": {"sizes": (784, 512, 512, 10), "batch": 256, "lr": 0.1},
    "chain": {"steps": 100, "n": 16},
    "bmm": {"shape": (32, 256, 256)},
    "digits": {"hidden": (64, 64), "batch": 32, "lr": 0.01},
}

QUICK = {
    "small": {"sizes": (16, 8, 8, 4), "batch": 4, "lr": 0.1},
    "mlp": {"sizes": (32, 16, 16, 10), "batch": 8, "lr": 0.1},
    "chain": {"steps": 10, "n": 4},
    "bmm": {"shape": (2, 8, 8)},
    "digits": {"hidden": (8,), "batch": 256, "lr": 0.01},
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
