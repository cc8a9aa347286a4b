"""Chat datasets: validated JSONL loading, built-in datasets, tokenisation with response masks."""
