"""Datasets: layouts and manifests, ingestion (`put`, `synth`) and the per-worker input pipeline."""
