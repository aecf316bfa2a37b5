"""Scoring whole files: `propensity score INPUT OUTPUT` on one machine, and the same scorer on a Dask cluster.

A file is read in chunks (sources.py), each chunk is scored in a worker process by the scoring step every
HTTP door shares (chunks.py over service/serving/pipeline.py's `score_rows`), and the chunks' results are
written in the input's order (sinks.py) with the rows that cannot be scored in a rejects file; run.py
drives it, distributed.py runs the same chunk scorer on a cluster, remote.py sends the chunks to a
running service instead.
"""
