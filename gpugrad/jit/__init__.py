"""``gg.compile``'s front end: it traces eager code into graphs and runs them on the tape.

- ``jit``: ``gg.compile(fn)``, the cache of traced programs per input signature;
- ``guards``: what a trace read from outside its arguments, checked on each call;
- ``tape``: each compiled call recorded as one op on the eager tape, so ``loss.backward()``
  and ``opt.step()`` work as they do eagerly;
- ``whole``: a loss's learnt program called directly, its gradients (computed with the
  forward) handed to ``.grad`` when ``loss.backward()`` runs.

This package sits above gpugrad.graph (it builds Symbols) and the compiler's passes
(gpugrad.compiler), which sit below the graph front end.

>>> import gpugrad as gg
>>> W = gg.Variable([1.0, 2.0])
>>> f = gg.compile(lambda x: gg.sum(x * W))
>>> float(f(gg.asarray([3.0, 4.0])))
11.0
"""
