"""Alignment-erosion analyses (Giordani, arXiv 2507.03662) on any trio of models.

One module per analysis, each a pure function returning a frozen result dataclass (holding its
config) and a ``plot_*`` function returning a Plotly figure. ``mi_align.pipelines.erosion`` maps
analysis names to runners used by ``mi-align analyze`` and the ``analyses/erosion_*.py`` scripts.
"""

from __future__ import annotations

from mi_align.erosion.activation_similarity import (
    ActivationSimilarityConfig,
    activation_similarity,
    plot_activation_similarity,
)
from mi_align.erosion.causal import CausalConfig, direction_intervention
from mi_align.erosion.causal_result import plot_direction_intervention
from mi_align.erosion.gradient_geometry import (
    GradientConfig,
    gradient_geometry,
    plot_gradient_geometry,
)
from mi_align.erosion.logprobs import TokenLogprobConfig, plot_token_logprobs, token_logprobs
from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors, plot_loss_vectors
from mi_align.erosion.next_token import NextTokenConfig, next_token_distributions, plot_next_tokens

# Imported eagerly: several analyses share their module's name (``loss_vectors`` is both),
# and a submodule import would otherwise replace the function on the package.
from mi_align.erosion.projection import (
    ProjectionConfig,
    ProjectionResult,
    difference_projection,
    layer_projection,
    plot_difference_projection,
    plot_layer_projection,
)
from mi_align.erosion.svd_directions import SVDConfig, plot_svd_directions, svd_directions

__all__ = [
    "ProjectionConfig",
    "ProjectionResult",
    "layer_projection",
    "plot_layer_projection",
    "difference_projection",
    "plot_difference_projection",
    "TokenLogprobConfig",
    "token_logprobs",
    "plot_token_logprobs",
    "NextTokenConfig",
    "next_token_distributions",
    "plot_next_tokens",
    "LossVectorConfig",
    "loss_vectors",
    "plot_loss_vectors",
    "GradientConfig",
    "gradient_geometry",
    "plot_gradient_geometry",
    "ActivationSimilarityConfig",
    "activation_similarity",
    "plot_activation_similarity",
    "SVDConfig",
    "svd_directions",
    "plot_svd_directions",
    "CausalConfig",
    "direction_intervention",
    "plot_direction_intervention",
]
