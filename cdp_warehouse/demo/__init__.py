"""Demo data for the example project "acme": a deterministic Segment-spec event generator."""
