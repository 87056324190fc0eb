"""Benchmarks behind ``fdpose bench``: each prints a table and writes JSON."""
