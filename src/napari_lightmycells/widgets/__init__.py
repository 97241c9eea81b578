"""napari widgets: thin Qt layers over the headless core (never imported by the core or the CLI)."""
