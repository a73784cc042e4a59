"""The benchmark harness of the suite: `python -m bench` (docs/performance.md)."""
