"""Objectives (`method.type`): one module each, registering a workflow."""
