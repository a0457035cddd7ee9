"""The graph compiler: one pass a module.

A graph goes through the passes in this order:

- ``trace``: the Symbols under a root become numbered slots and a topologically ordered
  list of steps ``(op, input slots, params, output slot)``;
- ``schedule``: forward steps with their rules chosen for the backend, the VJP steps on a
  path to a gradient target in reverse, and (for a whole training step) the optimizer update;
- ``interpret``: a schedule's first run, step by step, with checks between the steps; it is
  the definition the generated code must match;
- ``codegen``: straight-line Python for the forward and backward sweeps;
- ``program``: from the second run at an input signature, the whole run (and, for
  ``opt.minimize``, the optimizer's update, from ``update``) as one generated function:
  ``rewrite`` applies exact rules about ops in general (a negation moved into the step
  that produces it), ``lower`` writes NumPy steps with ``out=`` from the op declarations
  (elementwise ops' scalar formulas through ``formula``, other ops' own lowerings; a full
  sum's gradient stays 0-d), ``products`` and ``stack`` turn the per-step products of an
  unrolled loop into products of stacked rows (a weight's gradient summed over the steps as
  one product), and ``plan`` gives their values buffers by liveness, kept across runs,
  letting an elementwise step write over an input it reads for the last time; ``emit``
  writes the planned instructions as the function's text and compiles it;
- ``listing``: each generated line tagged with its op and the user's line that built it,
  the text ``.source`` hands back, and the file names that tracebacks and debuggers read.

Once a program is hot, ``tier`` puts its native tier in its place, built in the
background: ``fuse`` groups runs of elementwise instructions, ``native_fold`` folds the
steps around an op's own kernel into it (a bias add before the loss, the mean after it),
``native`` compiles each group (and the optimizer's update, and an op's own kernel) with
numba, from the same formulas; ``cuda_group`` writes the groups as CUDA kernels, and on
CuPy a program is built for the device (``cuda_program``), each group one of those kernels.

A program serves every batch size (``batch``): it is filed without the feeds' batch dims,
planned at a probe batch size, and reads its buffers and batch-sized values from a frame
made per batch size (specialised on the size where the graph's shapes do not follow it).

``gg.compile`` (the package gpugrad.jit, above gpugrad.graph) traces eager code into the
same graphs and runs them through these passes.

>>> import numpy as np, gpugrad as gg
>>> from gpugrad.compiler.trace import trace
>>> x = gg.Placeholder((None, 2), "float64", name="x")
>>> W = gg.Variable(np.ones((2, 1)), name="W")
>>> loss = gg.sum(gg.sigmoid(x @ W))
>>> [op.name for op, *_ in trace(loss, (W,)).steps]
['matmul', 'sigmoid', 'sum']
>>> sched, _ = loss._schedule((W,))
>>> value, saved = sched.forward({x: np.zeros((3, 2))}, grads=True)
>>> float(value)
1.5
>>> [g.shape for g in sched.backward(saved)]
[(2, 1)]
>>> _ = gg.gradients(loss, [W], feed={x: np.zeros((3, 2))})  # planned from here on
>>> (prog,) = sched.programs.values()
>>> print(prog.source.split("try:")[1].splitlines()[1].strip())
v2 = np.dot(v0, v1, B0)  # matmul  <doctest gpugrad.compiler[4]>:1
"""
