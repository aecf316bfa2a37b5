"""Prometheus-driven autoscaler for the api service on Docker Swarm (HPA-style policy).

`policy` is the pure decision (no I/O), `signals` asks Prometheus for the load, `scaler` reads and sets the
api service's replicas through the Docker Engine API, `loop` ties them together with the autoscaler's own
metrics. Entry points: `propensity autoscale` and `python -m service.autoscaler`.
"""
