# deploy/swarm/swarm.mk - Docker Swarm targets; `-include deploy/swarm/swarm.mk` from the Makefile after
# deploy/docker/docker.mk (uses BIN, venv, image, base-image, IMAGE_NAME, IMAGE_TAG, BASE_IMAGE).
#
#   make swarm-up                  deploy swarm-stack.yml as stack `propensity` (image IMAGE_NAME:IMAGE_TAG)
#   make swarm-up SWARM_INIT=1     ... making a one-node swarm on 127.0.0.1 first if this node is in none
#   make swarm-up SWARM_FILE="swarm-stack.yml swarm-stack.mlflow.yml"   ... with MLflow as the registry
#   make swarm-down                remove the stack, wait until it is gone
#   make swarm-status              running/desired tasks of every service
#   make test-swarm                build the images, deploy swarm-stack.test.yml, the e2e suite, tear down
#   make system-deps-swarm         the suite's Debian packages (docker.io, debootstrap), when missing
#   make swarm-configs             regenerate deploy/swarm/nginx*.conf and prometheus.test.yml
SWARM_FILE ?= swarm-stack.yml
SWARM_STACK ?= propensity
SWARM_INIT ?= 0
SWARM_RESOLVE_IMAGE ?= always
SWARM_API_IMAGE ?= $(IMAGE_NAME):$(IMAGE_TAG)
# read only by swarm-stack.mlflow.yml (SWARM_FILE="swarm-stack.yml swarm-stack.mlflow.yml")
SWARM_MLFLOW_IMAGE ?= $(MLFLOW_IMAGE_NAME):$(IMAGE_TAG)
TESTINFRA_IMAGE ?= propensity-testinfra:bookworm

.PHONY: swarm-up swarm-down swarm-status swarm-configs swarm-test-image system-deps-swarm test-swarm

swarm-up: venv ## deploy the Swarm stack (SWARM_FILE, SWARM_STACK, IMAGE_TAG); SWARM_INIT=1 may create a swarm
	PROPENSITY_API_IMAGE=$(SWARM_API_IMAGE) PROPENSITY_MLFLOW_IMAGE=$(SWARM_MLFLOW_IMAGE) \
	  $(BIN)/python -m tools.swarm up $(foreach f,$(SWARM_FILE),--file $(f)) \
	  --stack $(SWARM_STACK) --resolve-image $(SWARM_RESOLVE_IMAGE) $(if $(filter 1,$(SWARM_INIT)),--init)

swarm-down: venv ## remove the Swarm stack and wait until it is gone
	$(BIN)/python -m tools.swarm down --stack $(SWARM_STACK)

swarm-status: venv ## the Swarm stack's services: running/desired tasks, update state
	$(BIN)/python -m tools.swarm status --stack $(SWARM_STACK)

swarm-configs: venv ## regenerate the stacks' nginx configs and the test prometheus config
	$(BIN)/python -m tools.swarm_config

swarm-test-image: base-image ## nginx, redis and prometheus from Debian packages, for swarm-stack.test.yml
	docker build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(TESTINFRA_IMAGE) deploy/swarm/testinfra

system-deps-swarm: ## the Swarm suite's Debian packages (docker.io, debootstrap), when missing (as system-deps)
	bash tools/system-deps.sh swarm

test-swarm: system-deps-swarm venv image mlflow-image swarm-test-image ## the Swarm e2e suite: deploy, scale, roll out, roll back, kill, tear down
	PROPENSITY_E2E_IMAGE=$(IMAGE_NAME):$(IMAGE_TAG) PROPENSITY_TESTINFRA_IMAGE=$(TESTINFRA_IMAGE) \
	  PROPENSITY_E2E_MLFLOW_IMAGE=$(MLFLOW_IMAGE_NAME):$(IMAGE_TAG) \
	  $(BIN)/pytest -m swarm tests/swarm $(PYTEST_ARGS)
