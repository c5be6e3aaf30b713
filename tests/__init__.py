"""The test suite; see tests/README.md."""
