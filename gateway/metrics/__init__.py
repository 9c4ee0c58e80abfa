"""Prometheus metrics: what each process counts (:mod:`.registry`), the cluster-wide state read per scrape
(:mod:`.cluster`), the ``/metrics`` endpoint (:mod:`.endpoint`) and the ``--processes`` directory
(:mod:`.processes`, which imports nothing of prometheus_client before the directory is set)."""
