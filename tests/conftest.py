import pytest

from tests.support import serve, make_settings


@pytest.fixture
async def server():
    """A real uvicorn server on 127.0.0.1 running the zero-latency simulator."""
    async with serve(make_settings()) as srv:
        yield srv


@pytest.fixture
async def slow_server():
    """The simulator with 10 ms between chunks, for pause/cancel/disconnect mid-stream."""
    async with serve(make_settings(simulator={"first_chunk_ms": 5, "chunk_interval_ms": 10})) as srv:
        yield srv
