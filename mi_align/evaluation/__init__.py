"""Emergent-misalignment evaluation: resumable steered sampling, logprob-expected judges
(local or OpenAI-compatible), metrics (EM rate, string counts, direction cosines), figures."""
