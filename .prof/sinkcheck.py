import numpy as np, gpugrad as gg
from gpugrad import distributed as dist, eager
m = gg.nn.MLP([6, 5, 3], seed=0)
opt = dist.DistributedOptimizer(gg.optim.SGD(m.parameters(), lr=0.1))
x = gg.asarray(np.random.default_rng(dist.init().rank).normal(size=(4, 6)).astype("float32"))
opt.zero_grad(); gg.sum(m(x)).backward()
print([p.grad is opt.sharded.sinks.get(p) for p in m.parameters()], len(eager.grad_sinks))
g0 = [p.grad.copy() for p in m.parameters()]
opt.step()
print("unchanged after step", all(np.array_equal(a, p.grad) for a, p in zip(g0, m.parameters())))
opt.close()
print("closed", len(eager.grad_sinks), type(m.parameters()[0].data), m.parameters()[0].data.base is None)
