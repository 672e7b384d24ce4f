"""Reverse ETL (spec section 6): audience changes, computed in the warehouse, sent to
destinations. ``engine`` runs the syncs, ``diff`` builds the SQL, ``state`` keeps what each
destination accepted, ``http`` talks to APIs, and ``destinations`` holds one module per
destination type."""
