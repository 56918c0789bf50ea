"""Measuring precisions side by side: saved-for-backward bytes, interleaved step timing, memory
peaks, a bare PyTorch reference loop, and the table/JSON/plot of the results.

Used by `scripts/benchmark.py`; each file holds one concept so the tests can check them alone.
"""
