"""One module per warehouse behind ``base.Warehouse``; chosen by ``warehouse.type``."""

from __future__ import annotations

from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse
from cdp_warehouse.warehouses.bigquery import BigQueryWarehouse
from cdp_warehouse.warehouses.duckdb import DuckDBWarehouse
from cdp_warehouse.warehouses.postgres import PostgresWarehouse
from cdp_warehouse.warehouses.snowflake import SnowflakeWarehouse

WAREHOUSES: dict[str, type[Warehouse]] = {"duckdb": DuckDBWarehouse, "postgres": PostgresWarehouse,
                                          "snowflake": SnowflakeWarehouse, "bigquery": BigQueryWarehouse}


def connect(project: ResolvedProject, *, wait_for_lock: bool = True) -> Warehouse:
    """Open the project's warehouse. ``wait_for_lock``: wait a little for another process
    that holds it (DuckDB files have one writer); the collector retries on its own."""
    return WAREHOUSES[project.config.warehouse.type].open(project, wait_for_lock=wait_for_lock)


__all__ = ["WAREHOUSES", "Warehouse", "connect"]
