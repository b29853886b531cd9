"""Evaluation: the original test protocol (windows), metrics, scene cuts, the evaluator, reports."""
