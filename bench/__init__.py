"""Benchmarks: `polchain bench <name>` (bench/cli.py lists them; bench/common.py holds the shared helpers)."""
