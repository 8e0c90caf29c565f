"""Tunings (`tuning.type`): one module each, registering a TuningPlan."""
