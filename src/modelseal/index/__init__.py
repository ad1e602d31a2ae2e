"""The evidence index: a rebuildable cache of verified provenance, and lineage queries over it.

``schema`` (tables, database URLs, migrations), ``extract`` (what a verified Statement says
about datasets, code and base models; pure), ``crawler`` (registries and ``oci:`` directories
into the index, incrementally), ``queries`` (lineage and search). The registries stay the
authority: dropping the database and indexing again gives the same answers.
"""
