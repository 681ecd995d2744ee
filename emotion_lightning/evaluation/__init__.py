"""Metrics, per-group breakdowns, aggregation over runs, reports and plots."""
