"""/api/v1/readings refuses a page larger than the configured most, before asking the store."""

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from collector.api.problems import InvalidParam, ProblemError
from collector.api.readings import ReadingsQuery, get_readings
from collector.config import CollectorConfig
from collector.state import SETTINGS


async def test_a_limit_above_max_readings_is_a_400_naming_limit() -> None:
    app = web.Application()  # no store: the request must be refused before it is needed
    app[SETTINGS] = CollectorConfig.model_validate(
        {
            "database": {"url": "postgresql://collector@127.0.0.1:1/plant"},
            "mqtt": {"url": "mqtt://127.0.0.1:1"},
            "http": {"max_readings": 10},
        }
    )
    request = make_mocked_request("GET", "/api/v1/readings", app=app)
    with pytest.raises(ProblemError) as refused:
        await get_readings(request, ReadingsQuery.model_validate({"tag": "p/t", "limit": "11"}))
    assert refused.value.status == 400
    assert list(refused.value.invalid) == [InvalidParam("limit", "at most 10")]
