"""Alignment-erosion analyses (Giordani, arXiv 2507.03662) on any trio of models.

Every analysis has one shape: a frozen ``XConfig`` that checks itself (choices are typed
values from :mod:`mi_align.erosion.choices`: ``FirstTokens(10)``, ``LastToken()``,
``ModelDifference("instruct", "base")``, ``Contrastive("instruct")``), a result dataclass with
``to_dict`` / ``from_dict`` (a figure re-draws from its JSON), a pure
``run(trio, inputs, config) -> Result`` taking :class:`~mi_align.erosion.common.Inputs`, and
``plot_x(result) -> go.Figure``. ``mi_align.pipelines.erosion`` maps analysis names to them for
``mi-align analyze`` and the ``analyses/erosion_*.py`` scripts.
"""

from __future__ import annotations

from mi_align.erosion.activation_similarity import (
    ActivationSimilarity,
    ActivationSimilarityConfig,
    activation_similarity,
    plot_activation_similarity,
)
from mi_align.erosion.causal import CausalConfig, direction_intervention
from mi_align.erosion.causal_result import InterventionResult, plot_direction_intervention
from mi_align.erosion.choices import (
    ContentTokens,
    Contrastive,
    FirstTokens,
    LastToken,
    ModelDifference,
    ResponseTokens,
)
from mi_align.erosion.common import Inputs
from mi_align.erosion.gradient_geometry import (
    GradientConfig,
    GradientGeometry,
    gradient_geometry,
    plot_gradient_geometry,
)
from mi_align.erosion.logprobs import (
    LogprobComparison,
    TokenLogprobConfig,
    TokenLogprobs,
    logprob_comparison,
    plot_logprob_comparison,
    plot_token_logprobs,
    token_logprobs,
)

# Imported eagerly: several analyses share their module's name (``loss_vectors`` is both),
# and a submodule import would otherwise replace the function on the package.
from mi_align.erosion.loss_vectors import (
    LossVectorConfig,
    LossVectors,
    loss_vectors,
    plot_loss_vectors,
)
from mi_align.erosion.next_token import (
    NextTokenComparison,
    NextTokenConfig,
    NextTokens,
    next_token_comparison,
    next_token_distributions,
    plot_next_token_comparison,
    plot_next_tokens,
)
from mi_align.erosion.projection import ProjectionConfig, ProjectionResult, layer_projection
from mi_align.erosion.projection_plot import (
    DifferenceProjection,
    difference_projection,
    plot_difference_projection,
    plot_layer_projection,
)
from mi_align.erosion.svd_directions import (
    SVDConfig,
    SVDDirections,
    plot_svd_directions,
    svd_directions,
)

__all__ = [
    "Inputs",
    "FirstTokens",
    "ResponseTokens",
    "LastToken",
    "ContentTokens",
    "ModelDifference",
    "Contrastive",
    "ProjectionConfig",
    "ProjectionResult",
    "layer_projection",
    "plot_layer_projection",
    "DifferenceProjection",
    "difference_projection",
    "plot_difference_projection",
    "TokenLogprobConfig",
    "TokenLogprobs",
    "token_logprobs",
    "plot_token_logprobs",
    "LogprobComparison",
    "logprob_comparison",
    "plot_logprob_comparison",
    "NextTokenConfig",
    "NextTokens",
    "next_token_distributions",
    "plot_next_tokens",
    "NextTokenComparison",
    "next_token_comparison",
    "plot_next_token_comparison",
    "LossVectorConfig",
    "LossVectors",
    "loss_vectors",
    "plot_loss_vectors",
    "GradientConfig",
    "GradientGeometry",
    "gradient_geometry",
    "plot_gradient_geometry",
    "ActivationSimilarityConfig",
    "ActivationSimilarity",
    "activation_similarity",
    "plot_activation_similarity",
    "SVDConfig",
    "SVDDirections",
    "svd_directions",
    "plot_svd_directions",
    "CausalConfig",
    "InterventionResult",
    "direction_intervention",
    "plot_direction_intervention",
]
