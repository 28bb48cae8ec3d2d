# splitnet: the two commands are `make demo` (set up, then run the main job) and `make test`
# (set up, then lint, type-check and run the tests). Both start from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
DATA   := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
# Imagenette (the camera workload): the workspace's shared copy when this checkout sits
# beside it; otherwise wherever `make imagenette` (python -m splitnet.data.download) wrote it.
SHARED_IMAGENETTE := $(abspath $(wildcard ../shared/datasets/imagenette-224))
ifneq ($(SHARED_IMAGENETTE),)
export SPLITNET_IMAGENETTE_DIR ?= $(SHARED_IMAGENETTE)
endif

.PHONY: setup demo camera-data test bench grid train train-camera imagenette lint proto clean \
        image image-check pi-check

setup: $(VENV)/.installed $(DATA)

$(DATA):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y dataset-fashion-mnist

# torch first, pinned to the CPU wheel: a bare or newer torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[all,dev]'
	$(BIN)/pip install --no-deps --target $(VENV)/generator grpcio-tools==1.66.2
	touch $@

# the main job: the camera model, every policy side by side on a real LTE trace, emulated
# Raspberry Pi 4 (Imagenette is fetched first where there is no copy)
demo: setup camera-data
	$(BIN)/python -m experiments run

camera-data: setup
	@[ -n "$$SPLITNET_IMAGENETTE_DIR" ] || [ -d "$$HOME/.local/share/splitnet/imagenette-224/val" ] \
		|| $(BIN)/python -m splitnet.data.download imagenette

bench: setup
	$(BIN)/python -m splitnet.bench --json
	$(BIN)/python -m splitnet.bench --model resnet18_imagenette --json
	$(BIN)/python -m experiments.bench.edge --json
	$(BIN)/python -m experiments.bench.device --json

grid: setup
	$(BIN)/python -m experiments grid

train: setup
	$(BIN)/python -m splitnet.train

train-camera: setup
	$(BIN)/python -m splitnet.train --model resnet18_imagenette

# download, check and resize Imagenette v2 into ~/.local/share/splitnet/imagenette-224
imagenette: setup
	$(BIN)/python -m splitnet.data.download imagenette

proto: setup
	$(BIN)/python proto/generate.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy splitnet edge_server device_client experiments

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache

# the edge-server image from edge_server/Dockerfile, with podman and an mmdebstrap base (no
# Docker, no registry; root). TORCH_INDEX / PIP_FIND_LINKS say where CPU torch comes from.
image:
	edge_server/build_image.sh splitnet-edge:latest

# the device client installed and run on a Debian 12 arm64 userland under qemu-user (as
# root; slow under emulation: a check people run, not part of make test)
pi-check: setup camera-data
	$(SUDO) apt-get install -y qemu-user-static mmdebstrap
	$(SUDO) $(BIN)/python -m experiments.bench.pi_check

image-check: setup
	$(BIN)/python -m experiments.bench.image_check --image splitnet-edge:latest
