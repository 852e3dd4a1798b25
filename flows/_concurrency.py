"""Create Prefect global concurrency limits on first use (one slot each)."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound


def ensure_limits(names: list[str], limit: int = 1) -> None:
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
                except Exception:  # noqa: BLE001 - created by a concurrent run in the meantime
                    client.read_global_concurrency_limit_by_name(name)
