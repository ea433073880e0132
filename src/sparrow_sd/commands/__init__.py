"""The ``sparrow`` commands, one module per command: its flags (``add_parser``) and what it does.

========================  ==================
``sparrow demo``          ``demo.py``
``sparrow testbed ...``   ``testbed.py``
``sparrow datagen``       ``datagen.py``
``sparrow train``         ``train.py``
``sparrow export``        ``export.py``
``sparrow drafts ...``    ``suite.py``
``sparrow generate``      ``generate.py``
``sparrow bench``         ``bench.py``
========================  ==================

``flags.py`` holds what they share (flag value types, the target, tree and
dtype flags, the checks before a model loads), ``drafts.py`` reads the draft
folders they take, and ``demos.py`` holds the two demos ``sparrow demo`` runs.
:mod:`sparrow_sd.cli` assembles the parser and turns every error into one
line. A module's heavy imports happen when its parser is built or its command
runs, never when the package is imported.
"""
