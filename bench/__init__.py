"""Benchmarks of the hot paths, against baselines measured in the same run.

``python -m bench`` (``make bench``) starts the servers itself on PostgreSQL and Redis, drives
them from several load-generator processes, prints a table, and writes
``bench/results/<scenario>.json`` and ``docs/benchmarks.md``. See docs/benchmarks.md for
what each scenario measures and why the figures are CPU per operation.
"""
