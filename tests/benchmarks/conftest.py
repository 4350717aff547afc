"""Benchmarks are scripts run by hand (see each file's docstring), never collected by pytest."""

collect_ignore_glob = ["bench_*.py", "soak_*.py", "_ddp.py"]
