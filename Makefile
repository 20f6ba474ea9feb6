# Two stacks, one command each way:
#   make train   set up .venv (Python 3.7 + TF 1.15) and train a small ViT on the embedded digits data
#   make test    set up both stacks and run the whole test suite on each
# PY37 / PY311 name the interpreters; the defaults are the pyenv builds on the project machines.
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
PY37 ?= $(PYENV_ROOT)/versions/3.7.16/bin/python3.7
PY311 ?= $(shell test -x $(PYENV_ROOT)/versions/3.11.7/bin/python3.11 && echo $(PYENV_ROOT)/versions/3.11.7/bin/python3.11 || command -v python3.11)
PYTEST_ARGS ?= -q --durations=25  # the slowest tests in every log: what CI time is made of

.PHONY: setup setup-tf1 setup-tf2 setup-horovod tcmalloc train train-fashion train-fashion-tf2 fashion-data test test-tf1 test-tf2 format clean-venvs

setup: setup-tf1 setup-tf2 tcmalloc

# tcmalloc (Debian's libtcmalloc-minimal4), which launch.train preloads into itself (launch/allocator.py): glibc's
# malloc makes every training step fault its activations in again (2.6x slower on the small models here). Installed
# when we are root; otherwise a note, and the trainer runs with glibc's malloc and says so.
TCMALLOC_LIB := $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4))
tcmalloc:
	@if [ -n "$(TCMALLOC_LIB)" ]; then echo "tcmalloc: $(TCMALLOC_LIB)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4; } || \
	  echo "tcmalloc: apt-get could not install libtcmalloc-minimal4; training runs with glibc's malloc"; \
	else echo "tcmalloc: not installed (apt-get install libtcmalloc-minimal4 as root); training runs with glibc's malloc"; fi
setup-tf1: .venv/.installed
setup-tf2: .venv-tf2/.installed

# A stamp per environment: re-installed only when its requirement file changes.
.venv/.installed: requirements-tf1.txt
	test -x $(PY37) || { echo "Python 3.7 not found at $(PY37): set PY37=/path/to/python3.7" >&2; exit 1; }
	rm -rf .venv && $(PY37) -m venv .venv
	.venv/bin/pip install -q --upgrade pip==24.0
	.venv/bin/pip install -q -r requirements-tf1.txt
	touch $@

# Horovod, compiled against .venv's TensorFlow (about 2-4 minutes on 2 cores; cmake and g++ from the system). Its
# own stamp, so `make train` never waits for it and a changed pin or a rebuilt .venv builds it again.
setup-horovod: .venv/.horovod
.venv/.horovod: .venv/.installed requirements-horovod.txt
	command -v cmake >/dev/null && command -v g++ >/dev/null || { echo "Horovod needs cmake and g++" >&2; exit 1; }
	MAKEFLAGS=-j2 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1 \
	  HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=GLOO \
	  .venv/bin/pip install -q --no-cache-dir --no-build-isolation -r requirements-horovod.txt
	.venv/bin/python -c "import horovod.tensorflow as hvd; hvd.init(); assert hvd.size() == 1"
	touch $@

.venv-tf2/.installed: requirements-tf2.txt
	test -x $(PY311) || { echo "Python 3.11 not found at $(PY311): set PY311=/path/to/python3.11" >&2; exit 1; }
	rm -rf .venv-tf2 && $(PY311) -m venv .venv-tf2
	.venv-tf2/bin/pip install -q --upgrade pip
	.venv-tf2/bin/pip install -q -r requirements-tf2.txt
	# TensorFlow 2.21 imports all of Keras 3 at `import tensorflow` (and Keras, all of scikit-learn): 2.3 s of every
	# process start. Nothing here uses Keras (BUILD_NOTES.md: start-up).
	.venv-tf2/bin/pip uninstall -y -q keras
	touch $@

train: setup-tf1 tcmalloc
	.venv/bin/python -m launch.train $(TRAIN_ARGS)

# Fashion-MNIST's four IDX files from Debian's dataset-fashion-mnist package: installed when we are root, else
# unpacked into data/ with apt-get download + dpkg -x (no install). FASHION_DIR points elsewhere.
FASHION_DIR ?= $(shell test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz && echo /usr/share/datasets/fashion-mnist || echo data/fashion-mnist)
fashion-data:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: $(FASHION_DIR)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else mkdir -p data/deb && cd data/deb && apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb . && \
	  mkdir -p ../fashion-mnist && cp usr/share/datasets/fashion-mnist/*.gz ../fashion-mnist/; fi

# The Fashion-MNIST recipe (configs/fashion_mnist.flags; README: the headline) on the TF 1.15 stack (float32), and
# on the TF 2.x stack (bfloat16 where the CPU has it: 1.40x faster, same accuracy; docs/benchmarks.md).
FASHION_DATA_DIR = $$(test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz && echo /usr/share/datasets/fashion-mnist || echo data/fashion-mnist)
train-fashion: setup-tf1 tcmalloc fashion-data
	.venv/bin/python -m launch.train --flagfile=configs/fashion_mnist.flags --data_dir=$(FASHION_DATA_DIR) $(TRAIN_ARGS)

train-fashion-tf2: setup-tf2 tcmalloc fashion-data
	.venv-tf2/bin/python -m launch.train --flagfile=configs/fashion_mnist.flags --data_dir=$(FASHION_DATA_DIR) $(TRAIN_ARGS)

# Both environments first, so the cross-stack tests (a SavedModel exported on one stack, loaded on the other) run
# on both sides.
test: setup setup-horovod
	$(MAKE) test-tf1 test-tf2

# The suites run with tcmalloc preloaded when the machine has it, as the trainer does (launch/allocator.py): the
# in-process training tests fault their activations in on every step with glibc's malloc.
TEST_PRELOAD = LD_PRELOAD=$$(ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 2>/dev/null | head -1)

test-tf1: setup-tf1 setup-horovod tcmalloc
	$(TEST_PRELOAD) .venv/bin/python -m pytest $(PYTEST_ARGS) tests

test-tf2: setup-tf2 tcmalloc
	$(TEST_PRELOAD) .venv-tf2/bin/python -m pytest $(PYTEST_ARGS) tests

# Rewrites every Python file in the project's style (.style.yapf); tests/test_style.py checks it on both stacks.
format: setup-tf1
	.venv/bin/python -m yapf -i -r -p vit_raw input launch tools tests

clean-venvs:
	rm -rf .venv .venv-tf2
