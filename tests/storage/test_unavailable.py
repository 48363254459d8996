"""A store that does not answer is one error, StorageUnavailableError, naming the location."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from storage import Lake
from storage.errors import StorageUnavailableError
from tests.conftest import free_port


def test_lake_on_an_absent_store_raises_unavailable() -> None:
    opts = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "max_retries": "0",
    }
    lake = Lake("s3://nowhere/lake", opts)
    calls: list[Callable[[], object]] = [
        lambda: lake.exists("clips"),
        lambda: lake.read("clips"),
        lambda: lake.version("clips"),
        lake.create_tables,
    ]
    for call in calls:
        with pytest.raises(StorageUnavailableError, match="cannot reach s3://nowhere/lake/"):
            call()
