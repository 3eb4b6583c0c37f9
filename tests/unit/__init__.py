"""Unit tests of the libraries (geo/, fraud/, attribution/) and of pure modules: no database."""
