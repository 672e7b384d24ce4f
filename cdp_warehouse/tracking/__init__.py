"""Tracking plans that guard the data (Segment Protocols style).

Modules: ``models`` (the plan file's shape), ``plan`` (reading it with file:line problems,
the mode of a source), ``validator`` (a plan compiled into closures), ``guard`` (enforcement
inside ``land_messages``), ``store`` (the violation and quarantine tables), ``landed`` (Arrow
batches of landed events), ``check``/``infer``/``replay`` (the `cdp plan` commands).

Decisions, and why:

* Checked: ``track`` (event planned, then its properties) and ``identify`` (traits). Not
  checked: page, screen, group, alias (see ``validator``).
* Mode of a source: its ``tracking_plan_mode`` in cdp.yaml, else the plan's ``mode`` (default
  ``flag``); a source not listed under ``sources`` (``cdp load``'s ``load``) gets the plan's
  mode, so loading a file is no way around the plan. No plan: nothing is checked, and a
  ``tracking_plan_mode`` without a plan is a spec error (it would silently do nothing).
* Unplanned properties are violations unless the event (or nested object) says
  ``additional_properties: true``; an event listed without ``properties`` is planned with its
  properties unchecked.
* Violations and quarantine live in the raw schema (``<raw>.tracking_plan_violations``,
  ``<raw>.quarantined_messages``): they are ingest facts written in the events' transaction,
  and ``cdp run`` never rebuilds them.
* Only messages new to ``events`` are judged at flush: re-loading a file, or a later copy of a
  landed id, records nothing (ids are deterministic hashes, inserts skip existing ones).
* Any violation blocks a message in ``block`` mode (Protocols can also drop only the
  unplanned properties; not done here).
"""
