"""Helpers shared by the test modules: fixture corpora and clips, training runs, small configs."""
