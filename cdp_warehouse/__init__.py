"""cdp_warehouse: a warehouse-native Customer Data Platform."""

from __future__ import annotations

__version__ = "0.1.0"
