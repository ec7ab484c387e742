"""Everything that imports Dagster: the gate, assets, automation and the definitions builder."""
