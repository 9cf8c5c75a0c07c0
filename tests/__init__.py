"""gansvc's tests, a regular package: some dependencies (torch-fidelity 0.4.0) install a top-level `tests` package
into site-packages, which would shadow a namespace-package `tests/` and break `from tests.conftest import ...`."""
