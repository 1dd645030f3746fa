import pytest

from report_fixtures import write_results


@pytest.fixture
def synthetic_results(tmp_path):
    """A storage root (scenes/ + runs/) of 5 methods on 2 scenes with known answers."""
    return write_results(tmp_path / "results")
