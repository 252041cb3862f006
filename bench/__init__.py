"""Benchmarks of the DCR pipeline on the real samples in ../shared/data; run `python bench/run.py`."""
