"""Thin Dagster asset functions, one module per pipeline stage.

`pipelines.definitions` loads every asset and check of this package with Dagster's
`load_assets_from_package_module`, so a new stage is picked up by adding its file.
"""
