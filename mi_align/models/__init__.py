"""Packaged models: registry, fetch/convert, loading into TransformerBridge."""
