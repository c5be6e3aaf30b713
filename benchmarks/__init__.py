"""The benchmark (`./run.sh python benchmarks/bench.py`)."""
