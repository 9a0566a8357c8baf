"""Everything under tests/integration is an integration test, whether or not
its module remembers to say so: ``pytest -m 'not integration'`` (the fast
loop) must never start a lab, an agent or an sshd."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
