"""Getting Segment-spec messages into the landing table: loaders and (later) the collector."""
