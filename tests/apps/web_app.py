"""Jobs of the dashboard's browser tests (tests/test_web_browser.py): api_app's jobs and a
periodic job, so that every page has something to show."""

from __future__ import annotations

import podjobs
from tests.apps import api_app  # noqa: F401 - its jobs: api.fail, api.steps, api.ghost ...


@podjobs.periodic("0 * * * *", name="web.hourly", retries=0)
def hourly() -> None:
    pass
