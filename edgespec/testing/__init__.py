"""Helpers for tests: tiny random-weight GGUF models written on the fly."""
