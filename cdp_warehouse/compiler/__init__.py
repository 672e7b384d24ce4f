"""Specs → sqlglot trees → SQL text for a warehouse dialect. Never imports dagster."""
