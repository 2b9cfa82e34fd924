"""refacex — reversible, auditable face anonymisation.

The public Python API is re-exported here as the pipeline grows; the CLI
(``refacex --help``) is a thin layer over it.
"""

__version__ = "0.1.0"
