"""Pipelines: run analyses, write their outputs, and the demo's stages.

The feature packages (:mod:`mi_align.erosion`, :mod:`mi_align.steering`,
:mod:`mi_align.evaluation`, :mod:`mi_align.finetune`) compute and return results; the modules
here run them in order and write figures, JSON and resumable sample files (through
:mod:`mi_align.io`). :mod:`mi_align.cli` parses arguments and calls these.

- :mod:`~mi_align.pipelines.erosion`: the erosion analyses by name, run and written.
- :mod:`~mi_align.pipelines.steering_eval`: sample → judge → summarise → save for the recipe.
- :mod:`~mi_align.pipelines.demo` and its stages (``*_demo``): ``mi-align demo``.
"""
