"""CycloneDX ML-BOMs: ``inputs`` (model files, datasets, model card, metrics, steps),
``environment`` (the training environment's Python distributions), ``build`` (assemble and
validate) and ``remote`` (the BOM of a pushed model, from its registry evidence)."""
