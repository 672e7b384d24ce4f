"""The Dagster code location (``cdp_warehouse.definitions``), built from the project's YAML:
assets by a factory, resources for the warehouse and destinations, checks beside the assets,
schedules from the audiences' crons, sensors for new events and failed syncs."""
