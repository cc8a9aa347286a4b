"""Alignment-erosion analyses (Giordani, arXiv 2507.03662) on any trio of models.

One module per analysis, each a pure function returning a frozen result dataclass (holding its
config) and a ``plot_*`` function returning a Plotly figure. ``mi_align.erosion.registry`` maps
analysis names to runners used by ``mi-align analyze`` and the ``analyses/erosion_*.py`` scripts.
"""
