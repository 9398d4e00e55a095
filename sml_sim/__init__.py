"""sml-sim core: datasets, periods, models, retrainers, evaluation and the replay engine.

Imports torch and numpy; never textual, typer or sqlalchemy (see tests/test_import_hygiene.py).
"""

__version__ = "0.1.0"
