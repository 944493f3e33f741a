"""Fan-out benchmark harness for Tidings: `python -m bench.fanout` (see bench/README.md)."""
