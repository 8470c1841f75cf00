"""When the ``CI`` environment variable is set, a skipped test fails the run.

A skip for a missing tool or server (Prometheus, checkov, the manifest validator, an
optional package) would leave CI green while testing nothing. Under ``CI`` such a skip
is turned into a failure that names the reason; a test whose skip is expected there
(hardware the CI machine never has) carries ``@pytest.mark.expected_skip``. ``xfail``
is unaffected. Loaded by tests/conftest.py; a plugin module so it can be tested with
``pytest -p ci_skips``.
"""

import os

import pytest

MARKER = "expected_skip: the test may skip under CI (e.g. it needs a GPU the CI machine never has)"


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not os.environ.get("CI"):
        return
    if item.get_closest_marker("expected_skip") is not None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (f"skipped while CI is set: {reason}\n"
                       "a missing tool or server must fail CI: install it (make services) or, if the skip is "
                       "expected on every CI machine, mark the test @pytest.mark.expected_skip")
