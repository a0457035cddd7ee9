"""The scripts here run under mpiexec (tests/test_distributed_mpi.py), never in pytest."""

collect_ignore = ["checks.py", "fail.py"]
