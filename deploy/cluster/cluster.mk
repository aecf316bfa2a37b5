# The local cluster on one machine (included by the Makefile, which defines BIN, REPLICAS, WORKERS, PORT):
# REPLICAS replicas (each `propensity serve` with WORKERS gunicorn workers) behind nginx on :$(PORT),
# redis-server, prometheus and PostgreSQL (the prediction log; the postgres user's data dir in
# $(CLUSTER_DIR)/postgres), all on 127.0.0.1, as programs of one supervisord (restarts a process that
# dies, rotates the logs). Its socket, PID file, logs and generated configs: $(CLUSTER_DIR).
# Ports: CLUSTER_ARGS='--replica-port 8001 --redis-port 6390 --prometheus-port 9091 --postgres-port 6391
# --rate-limit 0'; --no-postgres: the replicas log predictions to their own setting (SQLite by default).
CLUSTER_DIR ?= run/cluster
CLUSTER_ARGS ?=

.PHONY: up down status

up: venv ## start REPLICAS replicas behind nginx on :1313, redis-server, prometheus, postgres (refuses if ports are taken)
	$(BIN)/python -m tools.cluster up --run-dir $(CLUSTER_DIR) --replicas $(REPLICAS) --workers $(WORKERS) \
		--nginx-port $(PORT) $(CLUSTER_ARGS)

down: ## stop exactly what `make up` started (its supervisord, and with it every process)
	$(BIN)/python -m tools.cluster down --run-dir $(CLUSTER_DIR)

status: ## what the local cluster runs, where
	$(BIN)/python -m tools.cluster status --run-dir $(CLUSTER_DIR)
