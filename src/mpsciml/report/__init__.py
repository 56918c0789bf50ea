"""Read run folders (one run, a sweep, or a tree of them) and compare precisions.

collect (find and load runs) -> aggregate (group, mean/std, ratios vs fp32) -> table (Markdown,
CSV, JSON) and figures (PNG); build ties them together for `scripts/report.py`.
"""
