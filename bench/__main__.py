"""`python -m bench`: the benchmark harness (bench/run.py, docs/performance.md)."""

from bench.run import main

main()
