"""Resources: the project's warehouse (the same seam the CLI uses) and its destinations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import dagster as dg

from cdp_warehouse.specs import ResolvedProject, load_project
from cdp_warehouse.warehouses import connect
from cdp_warehouse.warehouses.base import Warehouse


@lru_cache(maxsize=8)
def _project(directory: str) -> ResolvedProject:
    return load_project(directory)


class CdpWarehouse(dg.ConfigurableResource):
    """The warehouse of the project in ``project_dir`` (cdp.yaml decides its type)."""

    project_dir: str

    @property
    def project(self) -> ResolvedProject:
        return _project(self.project_dir)

    @contextmanager
    def connect(self) -> Iterator[Warehouse]:
        warehouse = connect(self.project)
        try:
            yield warehouse
        finally:
            warehouse.close()


class CdpDestination(dg.ConfigurableResource):
    """One destination of cdp.yaml. Its credentials stay in environment variables: they are
    read when a sync has something to send, never stored in Dagster's config or logs."""

    name: str

    def environ(self) -> dict[str, str]:
        return dict(os.environ)
