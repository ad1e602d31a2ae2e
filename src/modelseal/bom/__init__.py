"""CycloneDX ML-BOMs: built from a model directory and its pipeline inputs, or for a pushed
model from its registry evidence (remote)."""
