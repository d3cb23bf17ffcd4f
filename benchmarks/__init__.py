"""imstore benchmarks: a realistic workload, measured side by side with raw sqlite3 and FTS5.

Run ``python -m benchmarks --help``.
"""
