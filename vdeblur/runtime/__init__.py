"""Artifact -> frames. Imports neither torch nor tensorrt at module import."""
