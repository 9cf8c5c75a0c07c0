"""Helpers the tests share (no tests here): renderers, fixtures' building blocks."""
