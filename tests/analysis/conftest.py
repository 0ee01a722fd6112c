import pytest

from tests.helpers import write_run


@pytest.fixture
def make_run():
    return write_run
