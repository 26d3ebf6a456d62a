"""Ray jobs: the only package that imports ray. One module per stage, each a thin `run(cfg) -> dict`."""
