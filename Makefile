# cir_unc — the commands a reader needs. `make test` installs what it needs into the current Python first.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip

.PHONY: install test demo docs readme lab export clean-nbs

install:  ## install the package and every tool the tests and docs need (editable)
	$(PIP) install --quiet -e ".[dev]"

test: install  ## run every notebook as a test, plus tests/ (extra notebook flags: CIR_UNC_TEST_FLAGS="slow data")
	$(PYTHON) -m pytest

demo: install  ## train the InfoNCE baseline and the uncertainty model on the synthetic data (CPU, ~4 min) and compare them
	$(PYTHON) -c "from cir_unc.cli import demo_cli; demo_cli()"   # = cir_unc_demo

docs: install  ## write README.md from index.ipynb, then build the documentation site offline into _site/ (open _site/index.html)
	$(PYTHON) nbs/_site/build.py

readme:  ## write README.md from index.ipynb (after editing index.ipynb)
	$(PYTHON) nbs/_site/build.py --readme

lab: install  ## open the notebooks in JupyterLab
	$(PYTHON) -m jupyterlab nbs

export:  ## write cir_unc/ from the notebooks and clean them
	nbdev_export && nbdev_clean
