"""Process-level plumbing: configuration, atomic writes, failpoints, heap trimming. No Ray, no NER."""
