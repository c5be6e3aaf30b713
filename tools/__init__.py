"""Developer tools: run as scripts (`./run.sh python tools/NAME.py`) or import in tests."""
