"""One module per warehouse behind ``base.Warehouse``; chosen by ``warehouse.type``."""

from __future__ import annotations

from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse
from cdp_warehouse.warehouses.duckdb import DuckDBWarehouse

WAREHOUSES: dict[str, type[Warehouse]] = {"duckdb": DuckDBWarehouse}


def connect(project: ResolvedProject) -> Warehouse:
    """Open the project's warehouse."""
    kind = project.config.warehouse.type
    if kind not in WAREHOUSES:
        raise CdpError(
            f"warehouse type {kind!r} is not supported by this version yet",
            hint="use `type: duckdb`; `cdp compile --dialect " + kind + "` writes SQL for it",
        )
    return WAREHOUSES[kind].open(project)


__all__ = ["WAREHOUSES", "Warehouse", "connect"]
