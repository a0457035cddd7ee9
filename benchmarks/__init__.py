"""Benchmarks: gpugrad against hand-written NumPy (the floor) and the peers, as ratios."""
