"""in-toto layouts: the model (parse, keys, verify its signature), authoring (templates,
signing) and lint (check)."""
